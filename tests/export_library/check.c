/* The test program of tests/test_export_library.py, built against an exported library: runs the steps the
   test replays in Python and writes what came out.

       check DATA STEPS    DATA: STEPS training batches then one more, each input's raw bytes in order

   Writes losses.bin (STEPS float32 losses), train.bin and eval.bin (the outputs of a forward pass over the
   last batch in training, then evaluation mode), trained.safetensors (the weights then) and eval_loss.bin (the
   loss of one more training step on that batch, in evaluation mode). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netc_model.h"

static size_t input_bytes(int i) {
    const netc_model_value *v = netc_model_input(i);
    return (size_t)v->count * (v->is_int64 ? 8 : 4);
}

static int fail(netc_model *m, const char *what) {
    fprintf(stderr, "check: %s: %s\n", what, m ? netc_model_error(m) : "");
    return 1;
}

static int write_outputs(netc_model *m, const char *path, const void *const *inputs) {
    void *outputs[NETC_MODEL_OUTPUTS];
    FILE *out = fopen(path, "wb");
    if (!out) return fail(m, path);
    for (int i = 0; i < NETC_MODEL_OUTPUTS; ++i) outputs[i] = malloc((size_t)netc_model_output(i)->count * 8);
    if (netc_model_forward(m, inputs, outputs)) return fail(m, "forward");
    for (int i = 0; i < NETC_MODEL_OUTPUTS; ++i) {
        const netc_model_value *v = netc_model_output(i);
        fwrite(outputs[i], v->is_int64 ? 8 : 4, (size_t)v->count, out);
        free(outputs[i]);
    }
    return fclose(out) != 0;
}

int main(int argc, char **argv) {
    if (argc != 3) return fprintf(stderr, "usage: check DATA STEPS\n"), 2;
    const int steps = atoi(argv[2]);
    netc_model *m = netc_model_create();
    if (!m) return fail(m, "create");
    if (netc_model_load(m, "weights.safetensors")) return fail(m, "load");
    FILE *data = fopen(argv[1], "rb"), *losses = fopen("losses.bin", "wb");
    if (!data || !losses) return fail(m, "open");
    void *inputs[NETC_MODEL_INPUTS];
    for (int i = 0; i < NETC_MODEL_INPUTS; ++i) inputs[i] = malloc(input_bytes(i));
    for (int step = 0; step <= steps; ++step) {
        for (int i = 0; i < NETC_MODEL_INPUTS; ++i)
            if (fread(inputs[i], 1, input_bytes(i), data) != input_bytes(i)) return fail(m, "short data");
        if (step == steps) break;
        const float loss = netc_model_train_step(m, (const void *const *)inputs);
        if (netc_model_error(m)[0]) return fail(m, "train_step");
        fwrite(&loss, sizeof loss, 1, losses);
    }
    fclose(data), fclose(losses);
    if (write_outputs(m, "train.bin", (const void *const *)inputs)) return 1;
    netc_model_set_training(m, 0);
    if (write_outputs(m, "eval.bin", (const void *const *)inputs)) return 1;
    if (netc_model_save(m, "trained.safetensors")) return fail(m, "save");
    /* A training step in evaluation mode (BatchNorm on its running statistics), as a frozen-statistics
       fine-tune takes it: the library's eval-mode training step. */
    const float loss = netc_model_train_step(m, (const void *const *)inputs);
    if (netc_model_error(m)[0]) return fail(m, "train_step in eval mode");
    FILE *eval_loss = fopen("eval_loss.bin", "wb");
    if (!eval_loss || fwrite(&loss, sizeof loss, 1, eval_loss) != 1 || fclose(eval_loss)) return fail(m, "write");
    netc_model_free(m);
    return 0;
}
