/* The device of the C target: arenas in host memory, moved with memcpy. */
#include <stdlib.h>
#include <string.h>

#include "netc_internal.h"

/* calloc, as NumPy's np.zeros allocates the Python backend's arena: the same alignment, so the vectorised
   loops take the same path over the same bytes and the results match bit for bit. */
void *netc_device_alloc(size_t bytes) { return calloc(bytes ? bytes : 1, 1); }

void netc_device_free(void *memory) { free(memory); }

int netc_device_upload(char *arena, int64_t offset, const void *host, size_t bytes) {
    memcpy(arena + offset, host, bytes);
    return 0;
}

int netc_device_download(void *host, const char *arena, int64_t offset, size_t bytes) {
    memcpy(host, arena + offset, bytes);
    return 0;
}

int netc_device_copy(char *to, int64_t to_offset, const char *from, int64_t from_offset, size_t bytes) {
    memmove(to + to_offset, from + from_offset, bytes);
    return 0;
}

const char *netc_device_error(void) { return "no error"; }
