/* A small, strict reader and writer of safetensors files (the format PyTorch's safetensors package writes:
   an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and byte range, then
   the tensors' bytes). Part of the library netc exports; plain C11 and POSIX, nothing else.

   The reader checks everything before it hands anything back: a file that is truncated, has a malformed
   header, byte ranges that overlap, leave holes or do not match their shapes, or names a tensor twice is
   refused with a message, and nothing of it is used. The writer writes to a temporary file in the same
   folder and renames it over the target, so a crash leaves the old file or the new one, never half of
   one. */
#ifndef NETC_SAFETENSORS_H
#define NETC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define NETC_ST_MAX_RANK 8

/* The dtypes a file may hold (the reader knows their sizes; the library itself uses F32, F64 and I64). */
typedef enum {
    NETC_ST_F64, NETC_ST_F32, NETC_ST_F16, NETC_ST_BF16, NETC_ST_I64, NETC_ST_I32, NETC_ST_I16, NETC_ST_I8,
    NETC_ST_U64, NETC_ST_U32, NETC_ST_U16, NETC_ST_U8, NETC_ST_BOOL, NETC_ST_F8_E4M3, NETC_ST_F8_E5M2,
    NETC_ST_DTYPES
} netc_st_dtype;

typedef struct {
    char *name;                       /* NUL-terminated, owned by the file */
    netc_st_dtype dtype;
    int rank;
    int64_t shape[NETC_ST_MAX_RANK];
    const unsigned char *data;        /* the tensor's bytes, inside the file's buffer */
    uint64_t bytes;
} netc_st_tensor;

typedef struct {
    unsigned char *buffer;            /* the whole file */
    int count;
    netc_st_tensor *tensors;          /* in the header's order */
} netc_st_file;

/* Reads and checks `path`. 0 on success; otherwise -1, a message in `error` and nothing to free. */
int netc_st_read(const char *path, netc_st_file *file, char *error, size_t error_size);
void netc_st_free(netc_st_file *file);
const netc_st_tensor *netc_st_find(const netc_st_file *file, const char *name);

const char *netc_st_dtype_name(netc_st_dtype dtype);
size_t netc_st_dtype_size(netc_st_dtype dtype);

/* Writes `count` tensors atomically to `path`, with the metadata {"format": "pt"} that PyTorch's loader
   expects. `read(i, dst, context)` fills dst with tensor i's bytes (so the caller may fetch them from where
   they live, a GPU say) and returns 0, or non-zero to abandon the save. 0 on success; otherwise -1 and a
   message in `error`, and `path` is untouched. */
typedef int (*netc_st_reader)(int index, void *dst, void *context);
int netc_st_write(const char *path, int count, const netc_st_tensor *tensors, netc_st_reader read,
                  void *context, char *error, size_t error_size);

#endif
