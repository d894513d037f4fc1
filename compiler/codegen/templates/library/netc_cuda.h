/* What the CUDA target's steps (<step>.cu) share: the stream and cuBLAS handle they run on, and a GEMM. */
#ifndef NETC_CUDA_H
#define NETC_CUDA_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" { /* defined in netc_device_cuda.cu, called from each step's .cu */

/* The stream every step runs on, and a cuBLAS handle bound to it, made on first use; NULL when cuBLAS cannot
   start (netc_device_error says why). One per process: a model is used from one thread at a time. */
cudaStream_t netc_cuda_stream(void);
cublasHandle_t netc_cuda_blas(void);

/* Non-zero, with the message kept for netc_device_error, when `status` is an error. */
int netc_cuda_check(cudaError_t status, const char *what);

/* C = op(A) @ op(B) (+ C when beta is 1) for `batch` row-major matrices at byte offsets of the arena, as the
   C target's cblas call computes it (compiler/codegen/launch.py's GemmLaunch); single or double precision. */
int netc_cuda_gemm(char *arena, int is_double, int trans_a, int trans_b, int m, int n, int k, int lda, int ldb,
                   int ldc, int64_t a, int64_t b, int64_t c, int batch, int64_t stride_a, int64_t stride_b,
                   int64_t stride_c, int beta);

}

#endif
