/* The hostile-input program of tests/test_export_library.py, built with AddressSanitizer against an exported
   library: every file named on the command line must fail to load with a message and change nothing.

       hostile GOOD.safetensors BAD...

   Prints one line per BAD file: "refused <message>" or "LOADED"; then "unchanged" if a forward pass gives
   the same bits as before; then the error of a training step on int64 inputs of 1000 (out of any range the
   test uses), and of a save into a folder that does not exist. Saves a new model's initial weights to
   initial.safetensors first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netc_model.h"

static void *forward(netc_model *m, const void *const *inputs, size_t *bytes) {
    size_t total = 0;
    for (int i = 0; i < NETC_MODEL_OUTPUTS; ++i) total += (size_t)netc_model_output(i)->count * 8;
    char *all = calloc(total, 1), *at = all;
    void *outputs[NETC_MODEL_OUTPUTS];
    for (int i = 0; i < NETC_MODEL_OUTPUTS; ++i, at += netc_model_output(i - 1)->count * 8) outputs[i] = at;
    if (netc_model_forward(m, inputs, outputs)) printf("forward failed: %s\n", netc_model_error(m));
    *bytes = total;
    return all;
}

int main(int argc, char **argv) {
    netc_model *fresh = netc_model_create(); /* its initial weights, for the test to look at */
    if (!fresh || netc_model_save(fresh, "initial.safetensors")) return printf("cannot save initial weights\n"), 1;
    netc_model_free(fresh);
    netc_model *m = netc_model_create();
    if (!m || netc_model_load(m, argv[1])) return printf("cannot start: %s\n", netc_model_error(m)), 1;
    netc_model_set_training(m, 0);
    const void *inputs[NETC_MODEL_INPUTS];
    for (int i = 0; i < NETC_MODEL_INPUTS; ++i) {
        const netc_model_value *v = netc_model_input(i);
        if (v->is_int64) {
            int64_t *values = calloc((size_t)v->count, 8);
            inputs[i] = values;
        } else {
            float *values = calloc((size_t)v->count, 4);
            for (int64_t j = 0; j < v->count; ++j) values[j] = (float)(j % 7) - 3.0f;
            inputs[i] = values;
        }
    }
    size_t bytes;
    void *before = forward(m, inputs, &bytes);
    for (int f = 2; f < argc; ++f) {
        if (netc_model_load(m, argv[f])) printf("refused %s\n", netc_model_error(m));
        else printf("LOADED\n");
    }
    void *after = forward(m, inputs, &bytes);
    printf(memcmp(before, after, bytes) ? "CHANGED\n" : "unchanged\n");
    for (int i = 0; i < NETC_MODEL_INPUTS; ++i)
        if (netc_model_input(i)->is_int64) ((int64_t *)inputs[i])[1] = 1000;
    netc_model_set_training(m, 1);
    float loss = netc_model_train_step(m, inputs);
    printf("train_step %s: %s\n", loss != loss ? "nan" : "ran", netc_model_error(m));
    void *third = forward(m, inputs, &bytes);
    printf("forward: %s\n", netc_model_error(m));
    free(before), free(after), free(third);
    for (int i = 0; i < NETC_MODEL_INPUTS; ++i) free((void *)inputs[i]);
    printf("save: %d %s\n", netc_model_save(m, "no/such/folder/w.safetensors"), netc_model_error(m));
    printf("error after a good call: [%s]\n", (netc_model_save(m, "saved.safetensors"), netc_model_error(m)));
    netc_model_free(m);
    return 0;
}
