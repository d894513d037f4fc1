/* The safetensors writer of netc_safetensors.h: the header built in memory, then the file written beside
   its target, made durable and renamed over it, so that a reader sees the old file or the whole new one. */
#define _POSIX_C_SOURCE 200809L
#include "netc_safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(char *error, size_t size, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, size, format, args);
    va_end(args);
    return -1;
}

static int little_endian(void) {
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

typedef struct {
    char *text;
    size_t length, capacity;
} builder;

static int append(builder *b, const char *format, ...) {
    for (;;) {
        va_list args;
        va_start(args, format);
        int n = vsnprintf(b->text + b->length, b->capacity - b->length, format, args);
        va_end(args);
        if (n < 0) return -1;
        if ((size_t)n < b->capacity - b->length) return b->length += (size_t)n, 0;
        size_t capacity = 2 * b->capacity + (size_t)n;
        char *text = realloc(b->text, capacity);
        if (!text) return -1;
        b->text = text, b->capacity = capacity;
    }
}

static int append_name(builder *b, const char *name) {
    if (append(b, "\"")) return -1;
    for (const unsigned char *p = (const unsigned char *)name; *p; ++p) {
        int bad = *p == '"' || *p == '\\' || *p < 0x20;
        if (bad ? append(b, "\\u%04x", *p) : append(b, "%c", *p)) return -1;
    }
    return append(b, "\"");
}

/* The header, padded with spaces to a multiple of 8 bytes as the safetensors package pads it. */
static int build_header(builder *b, int count, const netc_st_tensor *tensors) {
    uint64_t offset = 0;
    if (append(b, "{\"__metadata__\":{\"format\":\"pt\"}")) return -1;
    for (int i = 0; i < count; ++i) {
        const netc_st_tensor *t = &tensors[i];
        if (append(b, ",") || append_name(b, t->name) || append(b, ":{\"dtype\":\"%s\",\"shape\":[", netc_st_dtype_name(t->dtype)))
            return -1;
        for (int d = 0; d < t->rank; ++d)
            if (append(b, d ? ",%lld" : "%lld", (long long)t->shape[d])) return -1;
        if (append(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                   (unsigned long long)(offset + t->bytes)))
            return -1;
        offset += t->bytes;
    }
    if (append(b, "}")) return -1;
    while (b->length % 8)
        if (append(b, " ")) return -1;
    return 0;
}

static int write_all(int fd, const void *data, size_t size) {
    const char *p = data;
    while (size) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n, size -= (size_t)n;
    }
    return 0;
}

/* The rename itself made durable: the folder's entry flushed (best effort: not every filesystem can). */
static void sync_folder(const char *path) {
    const char *slash = strrchr(path, '/');
    char *folder = slash ? strndup(path, (size_t)(slash - path + 1)) : strdup(".");
    int fd = folder ? open(folder, O_RDONLY) : -1;
    if (fd >= 0) fsync(fd), close(fd);
    free(folder);
}

int netc_st_write(const char *path, int count, const netc_st_tensor *tensors, netc_st_reader read,
                  void *context, char *error, size_t size) {
    if (!little_endian()) return fail(error, size, "safetensors files are little-endian; this machine is not");
    builder header = {malloc(4096), 0, 4096};
    if (!header.text || build_header(&header, count, tensors)) {
        free(header.text);
        return fail(error, size, "%s: out of memory", path);
    }
    size_t most = 0;
    for (int i = 0; i < count; ++i) most = tensors[i].bytes > most ? (size_t)tensors[i].bytes : most;
    void *staging = malloc(most ? most : 1);
    size_t path_length = strlen(path);
    char *temporary = malloc(path_length + 16);
    if (!staging || !temporary) {
        free(header.text), free(staging), free(temporary);
        return fail(error, size, "%s: out of memory", path);
    }
    snprintf(temporary, path_length + 16, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(temporary), status = -1;
    if (fd < 0) {
        fail(error, size, "%s: cannot create a file beside it: %s", path, strerror(errno));
        goto done;
    }
    unsigned char length[8];
    for (int i = 0; i < 8; ++i) length[i] = (unsigned char)((uint64_t)header.length >> (8 * i));
    if (write_all(fd, length, 8) || write_all(fd, header.text, header.length)) goto io_error;
    for (int i = 0; i < count; ++i) {
        if (read(i, staging, context)) {
            fail(error, size, "%s: could not fetch the tensor '%s'", path, tensors[i].name);
            goto abandon;
        }
        if (write_all(fd, staging, (size_t)tensors[i].bytes)) goto io_error;
    }
    /* Durable before it takes the name: a power cut leaves the old file or the whole new one. */
    if (fchmod(fd, 0644) || fsync(fd)) goto io_error;
    if (close(fd)) { fd = -1; goto io_error; }
    fd = -1;
    if (rename(temporary, path)) goto io_error;
    sync_folder(path);
    status = 0;
    goto done;
io_error:
    fail(error, size, "%s: %s", path, strerror(errno));
abandon:
    if (fd >= 0) close(fd);
    unlink(temporary);
done:
    free(header.text), free(staging), free(temporary);
    return status;
}
