/* The runtime of a library netc exports: the API of netc_model.h over the plan of netc_plan.c.

   It does what runtime/model.py, trainer.py and store.py do in Python, in the same order, so that the same
   kernels over the same arenas give the same bits: check the inputs, bring every state tensor the step keeps
   into its slot, copy the inputs in, run the step, copy its new state values into their slots where the step
   could not write them in place, and copy the results out. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netc_internal.h"
#include "netc_model.h"

#define HOST (-1)
#define SEED_STRIDE 1000003 /* a run's dropout seed: seed * SEED_STRIDE + steps so far, as in Python */

struct netc_model {
    char **arenas;          /* one per step of the plan */
    char **scratch;         /* per step: where copies from another slot wait (netc_copy.from_leaf) */
    int64_t *offsets;       /* offsets[step * tensors + tensor]: its slot in that step's arena, or -1 */
    void **host;            /* each tensor's host copy, the latest value where where[tensor] == HOST */
    int *where;             /* HOST, or the step whose slot holds the latest value */
    int training;
    double lr;
    int64_t seed;
    int64_t steps;          /* runs in training mode: the next forward pass's dropout seed */
    int64_t optimizer_steps; /* training steps taken: the next training step's dropout seed */
    char error[512];
};

static const netc_plan *const plan = &netc_the_plan;

static int fail(netc_model *m, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(m->error, sizeof m->error, format, args);
    va_end(args);
    return -1;
}

/* -- initial values: PyTorch's default initialisation (the same distributions, not the same bits) -------- */

static uint64_t next_random(uint64_t *state) { /* splitmix64 */
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *state) { return (double)(next_random(state) >> 11) * 0x1.0p-53; }

static double standard_normal(uint64_t *state) { /* Box-Muller */
    const double u = 1.0 - uniform01(state), v = uniform01(state);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static void store(void *array, netc_st_dtype dtype, int64_t i, double value) {
    if (dtype == NETC_ST_F32) ((float *)array)[i] = (float)value;
    else if (dtype == NETC_ST_F64) ((double *)array)[i] = value;
    else ((int64_t *)array)[i] = (int64_t)value;
}

static void initialise(const netc_tensor_spec *t, void *array, uint64_t *random) {
    const int64_t count = t->bytes / (int64_t)netc_st_dtype_size(t->dtype);
    const int64_t row = t->rank ? count / t->shape[0] : count;
    const double *a = t->init_args;
    for (int64_t i = 0; i < count; ++i) {
        double value = a[0];
        if (t->init == NETC_INIT_UNIFORM) value = a[0] * (2.0 * uniform01(random) - 1.0);
        else if (t->init == NETC_INIT_NORMAL || t->init == NETC_INIT_NORMAL_PADDING)
            value = a[0] + a[1] * standard_normal(random);
        if (t->init == NETC_INIT_NORMAL_PADDING && i / row == (int64_t)a[2]) value = 0.0; /* padding_idx */
        store(array, t->dtype, i, value);
    }
}

/* -- creating and freeing ---------------------------------------------------------------------------------- */

netc_model *netc_model_create(void) {
    netc_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    const int steps = plan->step_count, tensors = plan->tensor_count;
    m->arenas = calloc((size_t)steps, sizeof *m->arenas);
    m->scratch = calloc((size_t)steps, sizeof *m->scratch);
    m->offsets = malloc((size_t)(steps * tensors + 1) * sizeof *m->offsets);
    m->host = calloc((size_t)tensors + 1, sizeof *m->host);
    m->where = malloc(((size_t)tensors + 1) * sizeof *m->where);
    if (!m->arenas || !m->scratch || !m->offsets || !m->host || !m->where) goto failed;
    for (int s = 0; s < steps; ++s) {
        const netc_step_plan *step = &plan->steps[s];
        m->arenas[s] = netc_device_alloc((size_t)step->arena_bytes + 64); /* + 64, as the Python backend */
        if (!m->arenas[s]) goto failed;
        if (step->scratch_bytes && !(m->scratch[s] = netc_device_alloc((size_t)step->scratch_bytes))) goto failed;
        for (int t = 0; t < tensors; ++t) m->offsets[s * tensors + t] = -1;
        for (int i = 0; i < step->slot_count; ++i)
            m->offsets[s * tensors + step->slots[i].tensor] = step->slots[i].offset;
    }
    uint64_t random = 0;
    for (int t = 0; t < tensors; ++t) {
        const netc_tensor_spec *spec = &plan->tensors[t];
        if (!(m->host[t] = malloc(spec->bytes ? (size_t)spec->bytes : 1))) goto failed;
        initialise(spec, m->host[t], &random);
        m->where[t] = HOST;
    }
    m->training = 1; /* as a torch module starts */
    m->lr = plan->lr;
    return m;
failed:
    netc_model_free(m);
    return NULL;
}

void netc_model_free(netc_model *m) {
    if (!m) return;
    for (int s = 0; m->arenas && s < plan->step_count; ++s) netc_device_free(m->arenas[s]);
    for (int s = 0; m->scratch && s < plan->step_count; ++s) netc_device_free(m->scratch[s]);
    for (int t = 0; m->host && t < plan->tensor_count; ++t) free(m->host[t]);
    free(m->arenas), free(m->scratch), free(m->offsets), free(m->host), free(m->where);
    free(m);
}

const char *netc_model_error(const netc_model *m) {
    if (m) return m->error;
    /* netc_model_create returned NULL: memory ran out, or the device refused (no GPU, say). */
    static char message[320];
    const char *device = netc_device_error();
    snprintf(message, sizeof message, "netc_model_create failed: %s",
             strcmp(device, "no error") ? device : "out of memory");
    return message;
}

void netc_model_set_training(netc_model *m, int training) { m->training = training != 0; }

void netc_model_set_lr(netc_model *m, double lr) { m->lr = lr; }

const netc_model_value *netc_model_input(int index) {
    return index >= 0 && index < plan->input_count ? &plan->inputs[index].value : NULL;
}

const netc_model_value *netc_model_output(int index) {
    return index >= 0 && index < plan->output_count ? &plan->outputs[index].value : NULL;
}

/* -- moving state ------------------------------------------------------------------------------------------ */

static int64_t slot_of(const netc_model *m, int step, int tensor) {
    return m->offsets[step * plan->tensor_count + tensor];
}

/* Every state tensor step `s` keeps, moved into its slot from wherever its latest value is. */
static int bring(netc_model *m, int s) {
    const netc_step_plan *step = &plan->steps[s];
    for (int i = 0; i < step->slot_count; ++i) {
        const int t = step->slots[i].tensor, from = m->where[t];
        const size_t bytes = (size_t)plan->tensors[t].bytes;
        if (from == s) continue;
        int status = from == HOST
            ? netc_device_upload(m->arenas[s], step->slots[i].offset, m->host[t], bytes)
            : netc_device_copy(m->arenas[s], step->slots[i].offset, m->arenas[from], slot_of(m, from, t), bytes);
        if (status) return fail(m, "moving %s: %s", plan->tensors[t].name, netc_device_error());
        m->where[t] = s;
    }
    return 0;
}

/* The latest value of tensor `t`, copied into `dst`. */
static int fetch(netc_model *m, int t, void *dst) {
    const int from = m->where[t];
    if (from == HOST) return memcpy(dst, m->host[t], (size_t)plan->tensors[t].bytes), 0;
    if (netc_device_download(dst, m->arenas[from], slot_of(m, from, t), (size_t)plan->tensors[t].bytes))
        return fail(m, "reading %s: %s", plan->tensors[t].name, netc_device_error());
    return 0;
}

/* -- running a step ---------------------------------------------------------------------------------------- */

/* As runtime/model.py's _check_indices: class labels and token ids must index a class or a row. */
static int check_indices(netc_model *m, const netc_value_spec *in, const int64_t *values) {
    int64_t low = INT64_MAX, high = INT64_MIN;
    for (int64_t i = 0; i < in->value.count; ++i) {
        if (in->has_ignored && values[i] == in->ignored) continue;
        low = values[i] < low ? values[i] : low;
        high = values[i] > high ? values[i] : high;
    }
    if (low > high) return 0; /* nothing but ignored labels */
    if (low < 0 || high >= in->index_limit)
        return fail(m, "input '%s' holds %lld, out of range [0, %lld): the network has %lld %s", in->value.name,
                    (long long)(low < 0 ? low : high), (long long)in->index_limit, (long long)in->index_limit,
                    in->index_what);
    return 0;
}

/* Runs step `s` on `inputs` (by the network's input index) with dropout seed `seed`, leaves its new state in
   its slots and copies its outputs to `outputs` (by their index in the step's list). */
static int run(netc_model *m, int s, const void *const *inputs, void *const *outputs, int64_t seed) {
    const netc_step_plan *step = &plan->steps[s];
    char *arena = m->arenas[s];
    m->error[0] = '\0';
    if (!inputs && step->input_count) return fail(m, "%s: the inputs array is NULL", step->name);
    for (int i = 0; i < step->input_count; ++i) {
        const netc_value_spec *in = &plan->inputs[step->inputs[i].index];
        if (!inputs[step->inputs[i].index]) return fail(m, "input '%s' is NULL", in->value.name);
        if (in->index_limit && check_indices(m, in, inputs[step->inputs[i].index])) return -1;
    }
    if (bring(m, s)) return -1;
    for (int i = 0; i < step->input_count; ++i) {
        const netc_value_spec *in = &plan->inputs[step->inputs[i].index];
        if (netc_device_upload(arena, step->inputs[i].offset, inputs[step->inputs[i].index],
                               (size_t)step->inputs[i].bytes))
            return fail(m, "copying input '%s': %s", in->value.name, netc_device_error());
    }
    if ((step->seed_offset >= 0 && netc_device_upload(arena, step->seed_offset, &seed, sizeof seed)) ||
        (step->lr_offset >= 0 && netc_device_upload(arena, step->lr_offset, &m->lr, sizeof m->lr)))
        return fail(m, "copying the seed or the learning rate: %s", netc_device_error());
    const int64_t status = step->run(arena);
    if (status > 0)
        return fail(m, "an index input is out of range (element %lld of the batch)", (long long)(status - 1));
    if (status < 0) return fail(m, "%s: %s", step->name, netc_device_error());
    /* Values that are another slot's old contents go aside first: a copy below may overwrite that slot. */
    int64_t aside = 0;
    for (int i = 0; i < step->copy_count; ++i) {
        const netc_copy *c = &step->copies[i];
        if (c->from_leaf && netc_device_copy(m->scratch[s], aside, arena, c->value, (size_t)c->bytes))
            return fail(m, "%s: %s", step->name, netc_device_error());
        aside += c->from_leaf ? c->bytes : 0;
    }
    aside = 0;
    for (int i = 0; i < step->copy_count; ++i) {
        const netc_copy *c = &step->copies[i];
        int failed = c->from_leaf ? netc_device_copy(arena, c->slot, m->scratch[s], aside, (size_t)c->bytes)
                                  : netc_device_copy(arena, c->slot, arena, c->value, (size_t)c->bytes);
        if (failed) return fail(m, "%s: %s", step->name, netc_device_error());
        aside += c->from_leaf ? c->bytes : 0;
    }
    for (int i = 0; i < step->output_count; ++i)
        if (netc_device_download(outputs[i], arena, step->outputs[i].offset, (size_t)step->outputs[i].bytes))
            return fail(m, "copying the results: %s", netc_device_error());
    return 0;
}

int netc_model_forward(netc_model *m, const void *const *inputs, void *const *outputs) {
    if (!outputs) return fail(m, "forward: the outputs array is NULL");
    const int s = plan->forward[m->training];
    for (int i = 0; i < plan->steps[s].output_count; ++i)
        if (!outputs[plan->steps[s].outputs[i].index])
            return fail(m, "output '%s' is NULL", plan->outputs[plan->steps[s].outputs[i].index].value.name);
    void *ordered[NETC_MODEL_OUTPUTS + 1];
    for (int i = 0; i < plan->steps[s].output_count; ++i) ordered[i] = outputs[plan->steps[s].outputs[i].index];
    if (run(m, s, inputs, ordered, m->seed * SEED_STRIDE + m->steps)) return -1;
    m->steps += m->training;
    return 0;
}

float netc_model_train_step(netc_model *m, const void *const *inputs) {
    float loss = NAN;
    void *outputs[1] = {&loss};
    if (plan->train[m->training] < 0) {
        fail(m, "%s minimises nothing: its library has no training step", plan->network);
        return NAN;
    }
    if (run(m, plan->train[m->training], inputs, outputs, m->seed * SEED_STRIDE + m->optimizer_steps))
        return NAN;
    m->optimizer_steps += 1;
    m->steps += m->training;
    return loss;
}

/* -- weights in files -------------------------------------------------------------------------------------- */

typedef struct { netc_model *m; const int *tensors; } saving;

static int read_for_save(int index, void *dst, void *context) {
    const saving *s = context;
    return fetch(s->m, s->tensors[index], dst);
}

int netc_model_save(const netc_model *model, const char *path) {
    netc_model *m = (netc_model *)model; /* only its error message changes */
    m->error[0] = '\0';
    netc_st_tensor *tensors = calloc((size_t)plan->tensor_count + 1, sizeof *tensors);
    int *which = calloc((size_t)plan->tensor_count + 1, sizeof *which), count = 0;
    if (!tensors || !which) return free(tensors), free(which), fail(m, "%s: out of memory", path);
    for (int t = 0; t < plan->tensor_count; ++t) {
        const netc_tensor_spec *spec = &plan->tensors[t];
        if (!spec->saved) continue;
        netc_st_tensor *out = &tensors[count];
        out->name = (char *)spec->name, out->dtype = spec->dtype, out->rank = spec->rank;
        memcpy(out->shape, spec->shape, (size_t)spec->rank * sizeof *spec->shape);
        out->bytes = (uint64_t)spec->bytes;
        which[count++] = t;
    }
    saving context = {m, which};
    char message[sizeof m->error];
    int status = netc_st_write(path, count, tensors, read_for_save, &context, message, sizeof message);
    if (status && !m->error[0]) fail(m, "%s", message); /* else fetch said why */
    free(tensors), free(which);
    return status;
}

/* Why tensor `t` of the file cannot be the model's `spec`, or NULL. */
static int mismatch(netc_model *m, const netc_st_tensor *t, const netc_tensor_spec *spec, const char *path) {
    int same = t->dtype == spec->dtype && t->rank == spec->rank;
    for (int d = 0; same && d < t->rank; ++d) same = t->shape[d] == spec->shape[d];
    if (same) return 0;
    char found[128] = "", wanted[128] = "";
    for (int d = 0; d < t->rank; ++d)
        snprintf(found + strlen(found), sizeof found - strlen(found), d ? ", %lld" : "%lld", (long long)t->shape[d]);
    for (int d = 0; d < spec->rank; ++d)
        snprintf(wanted + strlen(wanted), sizeof wanted - strlen(wanted), d ? ", %lld" : "%lld",
                 (long long)spec->shape[d]);
    return fail(m, "%s: %s is %s[%s], the network's is %s[%s]", path, t->name, netc_st_dtype_name(t->dtype),
                found, netc_st_dtype_name(spec->dtype), wanted);
}

int netc_model_load(netc_model *m, const char *path) {
    m->error[0] = '\0';
    netc_st_file file;
    char message[sizeof m->error];
    if (netc_st_read(path, &file, message, sizeof message)) return fail(m, "%s", message);
    /* Every check before any change: a file that does not fit leaves the model as it was. */
    for (int i = 0; i < file.count; ++i) {
        const netc_st_tensor *t = &file.tensors[i];
        if (!strncmp(t->name, "optimizer.", 10)) continue; /* a netc checkpoint's optimiser state */
        int found = -1;
        for (int s = 0; s < plan->tensor_count && found < 0; ++s)
            if (plan->tensors[s].saved && !strcmp(plan->tensors[s].name, t->name)) found = s;
        if (found < 0) {
            fail(m, "%s: unexpected tensor '%s': %s has no such parameter or buffer", path, t->name, plan->network);
            goto refused;
        }
        if (mismatch(m, t, &plan->tensors[found], path)) goto refused;
    }
    for (int s = 0; s < plan->tensor_count; ++s)
        if (plan->tensors[s].saved && !netc_st_find(&file, plan->tensors[s].name)) {
            fail(m, "%s: missing tensor '%s'", path, plan->tensors[s].name);
            goto refused;
        }
    for (int s = 0; s < plan->tensor_count; ++s) {
        if (!plan->tensors[s].saved) continue;
        memcpy(m->host[s], netc_st_find(&file, plan->tensors[s].name)->data, (size_t)plan->tensors[s].bytes);
        m->where[s] = HOST;
    }
    netc_st_free(&file);
    return 0;
refused:
    netc_st_free(&file);
    return -1;
}
