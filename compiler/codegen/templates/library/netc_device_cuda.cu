/* The device of the CUDA target: arenas in GPU memory, moved with cudaMemcpy on the library's stream; the
   GEMMs of the steps through cuBLAS. */
#include <stdio.h>

#include "netc_cuda.h"

extern "C" {
#include "netc_internal.h"
}

static char last_error[256] = "no error";
static cudaStream_t stream;
static cublasHandle_t blas;
static int started;

extern "C" int netc_cuda_check(cudaError_t status, const char *what) {
    if (status == cudaSuccess) return 0;
    snprintf(last_error, sizeof last_error, "%s: %s", what, cudaGetErrorString(status));
    return -1;
}

static int start(void) {
    if (started) return 0;
    if (netc_cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate")) return -1;
    cublasStatus_t status = cublasCreate(&blas);
    if (status == CUBLAS_STATUS_SUCCESS) status = cublasSetStream(blas, stream);
    if (status != CUBLAS_STATUS_SUCCESS) {
        snprintf(last_error, sizeof last_error, "cuBLAS did not start (status %d)", (int)status);
        return -1;
    }
    started = 1;
    return 0;
}

extern "C" cudaStream_t netc_cuda_stream(void) { return start() ? NULL : stream; }
extern "C" cublasHandle_t netc_cuda_blas(void) { return start() ? NULL : blas; }

extern "C" int netc_cuda_gemm(char *arena, int is_double, int trans_a, int trans_b, int m, int n, int k, int lda,
                              int ldb, int ldc, int64_t a, int64_t b, int64_t c, int batch, int64_t stride_a,
                              int64_t stride_b, int64_t stride_c, int beta) {
    /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the operands swap places. */
    const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t status;
    if (is_double) {
        const double one = 1.0, add = beta;
        status = cublasDgemmStridedBatched(blas, op_b, op_a, n, m, k, &one, (const double *)(arena + b), ldb,
                                           stride_b, (const double *)(arena + a), lda, stride_a, &add,
                                           (double *)(arena + c), ldc, stride_c, batch);
    } else {
        const float one = 1.0f, add = (float)beta;
        status = cublasSgemmStridedBatched(blas, op_b, op_a, n, m, k, &one, (const float *)(arena + b), ldb,
                                           stride_b, (const float *)(arena + a), lda, stride_a, &add,
                                           (float *)(arena + c), ldc, stride_c, batch);
    }
    if (status == CUBLAS_STATUS_SUCCESS) return 0;
    snprintf(last_error, sizeof last_error, "a cuBLAS GEMM failed (status %d)", (int)status);
    return -1;
}

extern "C" void *netc_device_alloc(size_t bytes) {
    void *memory = NULL;
    if (start() || netc_cuda_check(cudaMalloc(&memory, bytes ? bytes : 1), "cudaMalloc")) return NULL;
    if (netc_cuda_check(cudaMemsetAsync(memory, 0, bytes, stream), "cudaMemset") ||
        netc_cuda_check(cudaStreamSynchronize(stream), "cudaMemset")) {
        cudaFree(memory);
        return NULL;
    }
    return memory;
}

extern "C" void netc_device_free(void *memory) {
    if (memory) cudaFree(memory);
}

extern "C" int netc_device_upload(char *arena, int64_t offset, const void *host, size_t bytes) {
    return netc_cuda_check(cudaMemcpyAsync(arena + offset, host, bytes, cudaMemcpyHostToDevice, stream),
                           "copying to the GPU") ||
           netc_cuda_check(cudaStreamSynchronize(stream), "copying to the GPU");
}

extern "C" int netc_device_download(void *host, const char *arena, int64_t offset, size_t bytes) {
    return netc_cuda_check(cudaMemcpyAsync(host, arena + offset, bytes, cudaMemcpyDeviceToHost, stream),
                           "copying from the GPU") ||
           netc_cuda_check(cudaStreamSynchronize(stream), "copying from the GPU");
}

extern "C" int netc_device_copy(char *to, int64_t to_offset, const char *from, int64_t from_offset, size_t bytes) {
    return netc_cuda_check(cudaMemcpyAsync(to + to_offset, from + from_offset, bytes, cudaMemcpyDeviceToDevice,
                                           stream), "copying on the GPU");
}

extern "C" const char *netc_device_error(void) { return last_error; }
