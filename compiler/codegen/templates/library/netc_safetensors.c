/* The safetensors reader of netc_safetensors.h (the writer is netc_safetensors_write.c). Everything read from
   a file is checked before it is believed: every length against what is left, every integer against
   overflow, every byte range against the data section, which the ranges must tile exactly (as the
   safetensors package itself insists). */
#define _POSIX_C_SOURCE 200809L
#include "netc_safetensors.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_HEADER_BYTES (100u << 20) /* the safetensors package's own limit */
#define MAX_TENSORS 1000000

static const char *const DTYPE_NAMES[NETC_ST_DTYPES] = {
    "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL", "F8_E4M3",
    "F8_E5M2",
};
static const unsigned char DTYPE_SIZES[NETC_ST_DTYPES] = {8, 4, 2, 2, 8, 4, 2, 1, 8, 4, 2, 1, 1, 1, 1};

const char *netc_st_dtype_name(netc_st_dtype dtype) { return DTYPE_NAMES[dtype]; }
size_t netc_st_dtype_size(netc_st_dtype dtype) { return DTYPE_SIZES[dtype]; }

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

/* -- the JSON header: a cursor over its bytes, and a parser of exactly what a header may hold ------------- */

typedef struct {
    const char *at, *end;
    char *error;
    size_t error_size;
} cursor;

static void skip_space(cursor *c) {
    while (c->at < c->end && (*c->at == ' ' || *c->at == '\t' || *c->at == '\n' || *c->at == '\r')) c->at++;
}

static int expect(cursor *c, char ch) {
    skip_space(c);
    if (c->at >= c->end || *c->at != ch)
        return fail(c->error, c->error_size, "malformed header: expected '%c'", ch);
    c->at++;
    return 0;
}

static int peek(cursor *c, char ch) {
    skip_space(c);
    return c->at < c->end && *c->at == ch;
}

static int hex_digit(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* A JSON string, decoded into a new NUL-terminated buffer (escapes, \uXXXX as UTF-8). A NUL inside is refused:
   a name must be a C string. */
static char *parse_string(cursor *c) {
    if (expect(c, '"')) return NULL;
    char *out = malloc((size_t)(c->end - c->at) + 1), *o = out;
    if (!out) return fail(c->error, c->error_size, "out of memory reading the header"), NULL;
    while (c->at < c->end && *c->at != '"') {
        unsigned char ch = (unsigned char)*c->at++;
        if (ch < 0x20) goto bad;
        if (ch != '\\') { *o++ = (char)ch; continue; }
        if (c->at >= c->end) goto bad;
        char e = *c->at++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) { *o++ = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"]; continue; }
        if (e != 'u' || c->end - c->at < 4) goto bad;
        unsigned code = 0;
        for (int i = 0; i < 4; ++i) {
            int d = hex_digit(*c->at++);
            if (d < 0) goto bad;
            code = code * 16 + (unsigned)d;
        }
        if (code == 0 || (code >= 0xd800 && code <= 0xdfff)) goto bad; /* NUL, or half a surrogate pair */
        if (code < 0x80) *o++ = (char)code;
        else if (code < 0x800) { *o++ = (char)(0xc0 | code >> 6); *o++ = (char)(0x80 | (code & 63)); }
        else {
            *o++ = (char)(0xe0 | code >> 12);
            *o++ = (char)(0x80 | ((code >> 6) & 63));
            *o++ = (char)(0x80 | (code & 63));
        }
    }
    if (c->at >= c->end) goto bad;
    c->at++;
    *o = '\0';
    return out;
bad:
    free(out);
    fail(c->error, c->error_size, "malformed header: a bad string");
    return NULL;
}

/* A non-negative integer below 2^63, as safetensors writes shapes and offsets. */
static int parse_count(cursor *c, uint64_t *value) {
    skip_space(c);
    if (c->at >= c->end || *c->at < '0' || *c->at > '9')
        return fail(c->error, c->error_size, "malformed header: expected a non-negative integer");
    if (*c->at == '0' && c->end - c->at > 1 && c->at[1] >= '0' && c->at[1] <= '9')
        return fail(c->error, c->error_size, "malformed header: a number with a leading zero");
    uint64_t v = 0;
    while (c->at < c->end && *c->at >= '0' && *c->at <= '9') {
        if (v > (UINT64_C(1) << 62) / 5) return fail(c->error, c->error_size, "malformed header: a number too large");
        v = v * 10 + (uint64_t)(*c->at++ - '0');
    }
    if (c->at < c->end && (*c->at == '.' || *c->at == 'e' || *c->at == 'E'))
        return fail(c->error, c->error_size, "malformed header: expected an integer");
    *value = v;
    return 0;
}

/* [n, n, ...] of at most `most` integers; the count read goes to *count. */
static int parse_counts(cursor *c, uint64_t *values, int most, int *count) {
    *count = 0;
    if (expect(c, '[')) return -1;
    if (peek(c, ']')) return c->at++, 0;
    for (;;) {
        if (*count == most) return fail(c->error, c->error_size, "malformed header: a list too long");
        if (parse_count(c, &values[(*count)++])) return -1;
        if (peek(c, ',')) { c->at++; continue; }
        return expect(c, ']');
    }
}

/* The metadata: an object of strings, read and dropped. */
static int skip_metadata(cursor *c) {
    if (expect(c, '{')) return -1;
    if (peek(c, '}')) return c->at++, 0;
    for (;;) {
        char *key = parse_string(c);
        if (!key) return -1;
        free(key);
        if (expect(c, ':')) return -1;
        char *value = parse_string(c);
        if (!value) return fail(c->error, c->error_size, "malformed header: __metadata__ must map strings to strings");
        free(value);
        if (peek(c, ',')) { c->at++; continue; }
        return expect(c, '}');
    }
}

/* {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, each key once and no other. */
static int parse_entry(cursor *c, netc_st_tensor *t, uint64_t offsets[2]) {
    int seen = 0;
    if (expect(c, '{')) return -1;
    while (!peek(c, '}')) {
        if (seen && expect(c, ',')) return -1;
        char *key = parse_string(c);
        if (!key) return -1;
        int which = !strcmp(key, "dtype") ? 1 : !strcmp(key, "shape") ? 2 : !strcmp(key, "data_offsets") ? 4 : 0;
        free(key);
        if (!which || (seen & which))
            return fail(c->error, c->error_size, "malformed header: tensor '%s' has an unknown or repeated key", t->name);
        seen |= which;
        if (expect(c, ':')) return -1;
        if (which == 1) {
            char *dtype = parse_string(c);
            if (!dtype) return -1;
            int found = -1;
            for (int i = 0; i < NETC_ST_DTYPES; ++i)
                if (!strcmp(dtype, DTYPE_NAMES[i])) found = i;
            if (found < 0) {
                fail(c->error, c->error_size, "tensor '%s' has the unknown dtype '%.32s'", t->name, dtype);
                free(dtype);
                return -1;
            }
            free(dtype);
            t->dtype = (netc_st_dtype)found;
        } else if (which == 2) {
            uint64_t dims[NETC_ST_MAX_RANK];
            if (parse_counts(c, dims, NETC_ST_MAX_RANK, &t->rank)) return -1;
            for (int i = 0; i < t->rank; ++i) t->shape[i] = (int64_t)dims[i];
        } else {
            int n;
            if (parse_counts(c, offsets, 2, &n)) return -1;
            if (n != 2) return fail(c->error, c->error_size, "tensor '%s': data_offsets must be [begin, end]", t->name);
        }
    }
    c->at++;
    if (seen != 7) return fail(c->error, c->error_size, "tensor '%s' lacks its dtype, shape or data_offsets", t->name);
    return 0;
}

typedef struct { uint64_t begin, end; int index; } range;

static int by_begin(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Every range as long as its shape says, inside the data, and together covering it exactly once. */
static int check_ranges(netc_st_file *file, range *ranges, const unsigned char *data, uint64_t data_bytes,
                        char *error, size_t size) {
    for (int i = 0; i < file->count; ++i) {
        netc_st_tensor *t = &file->tensors[i];
        uint64_t bytes = netc_st_dtype_size(t->dtype);
        for (int d = 0; d < t->rank; ++d) {
            uint64_t dim = (uint64_t)t->shape[d];
            if (dim && bytes > UINT64_MAX / dim) return fail(error, size, "tensor '%s' is too large", t->name);
            bytes *= dim;
        }
        if (ranges[i].end < ranges[i].begin || ranges[i].end > data_bytes)
            return fail(error, size, "tensor '%s' lies outside the file's data (truncated?)", t->name);
        if (ranges[i].end - ranges[i].begin != bytes)
            return fail(error, size, "tensor '%s' has %llu bytes, its shape and dtype need %llu", t->name,
                        (unsigned long long)(ranges[i].end - ranges[i].begin), (unsigned long long)bytes);
        t->bytes = bytes;
    }
    qsort(ranges, (size_t)file->count, sizeof *ranges, by_begin);
    uint64_t at = 0;
    for (int i = 0; i < file->count; ++i) {
        if (ranges[i].begin != at)
            return fail(error, size, "tensor '%s' %s another tensor's bytes", file->tensors[ranges[i].index].name,
                        ranges[i].begin < at ? "overlaps" : "leaves a gap before");
        file->tensors[ranges[i].index].data = data + ranges[i].begin;
        at = ranges[i].end;
    }
    if (at != data_bytes) return fail(error, size, "the file has %llu bytes after its last tensor",
                                      (unsigned long long)(data_bytes - at));
    return 0;
}

/* Whether `text` is UTF-8, as JSON (and the safetensors package) requires: no stray continuation bytes, no
   overlong forms, no surrogates, nothing past U+10FFFF. */
static int is_utf8(const unsigned char *text, size_t length) {
    for (size_t i = 0; i < length;) {
        const unsigned char c = text[i];
        const size_t extra = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 9;
        if (extra == 9 || extra > length - i - 1) return 0; /* not a leading byte, or cut short */
        uint32_t code = extra ? c & (0x3f >> extra) : c;
        for (size_t k = 1; k <= extra; ++k) {
            if ((text[i + k] & 0xc0) != 0x80) return 0;
            code = code << 6 | (text[i + k] & 0x3f);
        }
        static const uint32_t least[4] = {0, 0x80, 0x800, 0x10000};
        if (code < least[extra] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return 0;
        i += extra + 1;
    }
    return 1;
}

static int parse_header(netc_st_file *file, const char *header, size_t length, const unsigned char *data,
                        uint64_t data_bytes, char *error, size_t size) {
    if (!is_utf8((const unsigned char *)header, length))
        return fail(error, size, "malformed header: not UTF-8");
    cursor c = {header, header + length, error, size};
    size_t capacity = 16;
    range *ranges = malloc(capacity * sizeof *ranges);
    file->tensors = malloc(capacity * sizeof *file->tensors);
    if (!ranges || !file->tensors) goto oom;
    if (expect(&c, '{')) goto bad;
    for (int first = 1; !peek(&c, '}'); first = 0) {
        if (!first && expect(&c, ',')) goto bad;
        char *name = parse_string(&c);
        if (!name) goto bad;
        if (expect(&c, ':')) { free(name); goto bad; }
        if (!strcmp(name, "__metadata__")) {
            free(name);
            if (skip_metadata(&c)) goto bad;
            continue;
        }
        if (netc_st_find(file, name)) {
            fail(error, size, "the tensor '%s' is named twice", name);
            free(name);
            goto bad;
        }
        if ((size_t)file->count == capacity) {
            if (capacity >= MAX_TENSORS) { free(name); fail(error, size, "too many tensors"); goto bad; }
            capacity *= 2;
            range *r = realloc(ranges, capacity * sizeof *ranges);
            if (r) ranges = r;
            netc_st_tensor *t = realloc(file->tensors, capacity * sizeof *file->tensors);
            if (t) file->tensors = t;
            if (!r || !t) { free(name); goto oom; }
        }
        netc_st_tensor *t = &file->tensors[file->count];
        memset(t, 0, sizeof *t);
        t->name = name;
        file->count++;
        uint64_t offsets[2];
        if (parse_entry(&c, t, offsets)) goto bad;
        ranges[file->count - 1] = (range){offsets[0], offsets[1], file->count - 1};
    }
    c.at++;
    skip_space(&c);
    if (c.at != c.end) { fail(error, size, "malformed header: bytes after its closing brace"); goto bad; }
    if (check_ranges(file, ranges, data, data_bytes, error, size)) goto bad;
    free(ranges);
    return 0;
oom:
    fail(error, size, "out of memory reading the header");
bad:
    free(ranges);
    return -1;
}

int netc_st_read(const char *path, netc_st_file *file, char *error, size_t size) {
    memset(file, 0, sizeof *file);
    if (!little_endian()) return fail(error, size, "safetensors files are little-endian; this machine is not");
    FILE *in = fopen(path, "rb");
    if (!in) return fail(error, size, "%s: %s", path, strerror(errno));
    struct stat info;
    if (fstat(fileno(in), &info) || !S_ISREG(info.st_mode)) {
        fclose(in);
        return fail(error, size, "%s: not a regular file", path);
    }
    uint64_t length = (uint64_t)info.st_size;
    if (length < 8 || length > SIZE_MAX) {
        fclose(in);
        return fail(error, size, "%s: not a safetensors file (%llu bytes)", path, (unsigned long long)length);
    }
    file->buffer = malloc((size_t)length);
    if (!file->buffer) { fclose(in); return fail(error, size, "%s: out of memory reading it", path); }
    size_t got = fread(file->buffer, 1, (size_t)length, in);
    fclose(in);
    if (got != length) {
        netc_st_free(file);
        return fail(error, size, "%s: could not read the whole file", path);
    }
    uint64_t header = 0;
    for (int i = 7; i >= 0; --i) header = header << 8 | file->buffer[i];
    if (header > MAX_HEADER_BYTES || header > length - 8) {
        netc_st_free(file);
        return fail(error, size, "%s: its header claims %llu bytes, the file has %llu after the length (truncated, "
                    "or not a safetensors file)", path, (unsigned long long)header, (unsigned long long)(length - 8));
    }
    char message[256];
    const unsigned char *data = file->buffer + 8 + header;
    if (parse_header(file, (const char *)file->buffer + 8, (size_t)header, data, length - 8 - header, message,
                     sizeof message)) {
        netc_st_free(file);
        return fail(error, size, "%s: %s", path, message);
    }
    return 0;
}

void netc_st_free(netc_st_file *file) {
    for (int i = 0; i < file->count; ++i) free(file->tensors[i].name);
    free(file->tensors);
    free(file->buffer);
    memset(file, 0, sizeof *file);
}

const netc_st_tensor *netc_st_find(const netc_st_file *file, const char *name) {
    for (int i = 0; i < file->count; ++i)
        if (!strcmp(file->tensors[i].name, name)) return &file->tensors[i];
    return NULL;
}
