/* What the generated plan (netc_plan.c) tells the runtime (netc_model.c), and what the runtime asks of the
   device that holds the arenas (netc_device_cpu.c, or netc_device_cuda.cu for the CUDA target).

   Each step (a training step, a forward pass; in training or in evaluation mode) is the same compiled
   module netc's Python backend runs: every kernel in order over one arena, in which every buffer has a
   fixed offset. The parameters, buffers and optimiser state are resident: each step keeps a slot for each
   tensor it reads, and the latest value of a tensor is in exactly one place (the host, or one step's slot),
   moved only when another step needs it (as runtime/store.py does in Python). */
#ifndef NETC_INTERNAL_H
#define NETC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "netc_model.h"
#include "netc_safetensors.h"

enum netc_init { NETC_INIT_UNIFORM, NETC_INIT_NORMAL, NETC_INIT_CONSTANT, NETC_INIT_NORMAL_PADDING };

/* A parameter, buffer or piece of optimiser state. */
typedef struct {
    const char *name;      /* PyTorch's state_dict name, or optimizer.KEY.PARAM */
    netc_st_dtype dtype;   /* F32, F64 or I64 */
    int rank;
    const int64_t *shape;
    int64_t bytes;
    int saved;             /* in the model's state dict (a parameter or buffer), not the optimiser's */
    int init;              /* enum netc_init, with init_args: PyTorch's default initialisation */
    double init_args[3];
} netc_tensor_spec;

/* An input or output of the network, in the .net file's order: what netc_model.h shows, and its bound. */
typedef struct {
    netc_model_value value;
    netc_st_dtype dtype;    /* F32 or I64 */
    int64_t index_limit;    /* an i64 input used as an index: values in [0, index_limit); 0 where none */
    const char *index_what; /* "classes", or "rows in its embedding table" */
    int has_ignored;
    int64_t ignored;        /* a loss's ignore_index, allowed besides the range */
} netc_value_spec;

typedef struct { int tensor; int64_t offset; } netc_slot;       /* a state tensor's bytes in an arena */
typedef struct { int index; int64_t offset, bytes; } netc_binding; /* an input or output's bytes in an arena */
/* A new state value that the step could not write over its slot in place: copied there after the run. A
   value that is itself a leaf (another tensor's slot, as store.py's from_leaf) goes through scratch memory
   first, since a copy before it may overwrite that slot. */
typedef struct { int64_t slot, value, bytes; int from_leaf; } netc_copy;

typedef struct {
    const char *name;
    int64_t (*run)(char *arena);   /* 0, the element+1 of an index out of range, or < 0: a device error */
    int64_t arena_bytes;
    int slot_count;
    const netc_slot *slots;
    int input_count;
    const netc_binding *inputs;    /* the network's inputs the step reads */
    int output_count;
    const netc_binding *outputs;   /* forward: the declared outputs; a training step: the loss (index 0) */
    int64_t seed_offset, lr_offset; /* dropout's seed (i64) and the learning rate (f64); -1 if not read */
    int copy_count;
    const netc_copy *copies;
    int64_t scratch_bytes;
} netc_step_plan;

enum { NETC_EVAL = 0, NETC_TRAINING = 1 };

typedef struct {
    const char *network;
    int batch;
    int tensor_count;
    const netc_tensor_spec *tensors;
    int input_count;
    const netc_value_spec *inputs;
    int output_count;
    const netc_value_spec *outputs;
    int step_count;
    const netc_step_plan *steps;
    int forward[2], train[2];      /* the step of each mode (NETC_EVAL, NETC_TRAINING) */
    double lr;                     /* the learning rate the library was exported with */
} netc_plan;

extern const netc_plan netc_the_plan;

/* -- the device: where the arenas live ---------------------------------------------------------------------
   Every function returns 0 on success, or non-zero with netc_device_error() saying why. */
void *netc_device_alloc(size_t bytes); /* zeroed; NULL on failure */
void netc_device_free(void *memory);
int netc_device_upload(char *arena, int64_t offset, const void *host, size_t bytes);
int netc_device_download(void *host, const char *arena, int64_t offset, size_t bytes);
int netc_device_copy(char *to, int64_t to_offset, const char *from, int64_t from_offset, size_t bytes);
const char *netc_device_error(void);

#endif
