/* The same heat simulator as heat_sim.cpp, through the plain C API.
 *   pybridge-heat-c --synthesize ALPHA H Q0   print the 50 sensor readings and exit
 *   pybridge-heat-c --measurements FILE       serve residuals (model - measurements) on $PYBRIDGE_CHANNEL */
#include <pybridge/pybridge.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heat_model.h"

static int synthesize(char **theta_text) {
    double theta[HEAT_N_PARAMS], readings[HEAT_N_READINGS];
    const char *why = NULL;
    for (int i = 0; i < HEAT_N_PARAMS; ++i) theta[i] = strtod(theta_text[i], NULL);
    if (heat_model_run(theta, readings, &why) != 0) {
        fprintf(stderr, "pybridge-heat-c: %s\n", why);
        return 2;
    }
    for (int i = 0; i < HEAT_N_READINGS; ++i) printf("%.17g\n", readings[i]);
    return 0;
}

int main(int argc, char **argv) {
    double measured[HEAT_N_READINGS];
    if (argc == 5 && strcmp(argv[1], "--synthesize") == 0) return synthesize(argv + 2);
    if (argc != 3 || strcmp(argv[1], "--measurements") != 0) {
        fprintf(stderr, "usage: %s --synthesize ALPHA H Q0 | --measurements FILE\n", argv[0]);
        return 2;
    }
    if (heat_model_read_measurements(argv[2], measured) != 0) {
        fprintf(stderr, "pybridge-heat-c: cannot read %d numbers from %s\n", HEAT_N_READINGS, argv[2]);
        return 2;
    }

    const pybridge_declaration declaration = {HEAT_N_PARAMS, HEAT_N_READINGS, PYBRIDGE_CAP_RESIDUALS};
    pybridge_channel *channel = NULL;
    int status = pybridge_channel_open(NULL, &declaration, &channel);
    pybridge_request request;
    while (status == PYBRIDGE_OK && (status = pybridge_channel_wait(channel, &request)) == PYBRIDGE_OK) {
        const char *why = NULL;
        if (heat_model_run(request.params, request.residuals, &why) != 0) {
            status = pybridge_channel_reply_error(channel, why);
            continue;
        }
        for (uint32_t i = 0; i < request.n_residuals; ++i) request.residuals[i] -= measured[i];
        status = pybridge_channel_reply_residuals(channel);
    }
    if (status != PYBRIDGE_CLOSED) fprintf(stderr, "pybridge-heat-c: %s\n", pybridge_channel_last_error(channel));
    pybridge_channel_close(channel);
    return status == PYBRIDGE_CLOSED ? 0 : 1;
}
