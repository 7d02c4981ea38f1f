/* A minimal simulator for the consumer matrix, in C89: 3 parameters, cost = sum of squares. */
#include <stdio.h>

#include <pybridge/pybridge.h>

int main(void) {
    pybridge_declaration declaration = {3, 0, 0, 0};
    pybridge_channel *channel = NULL;
    pybridge_request request;
    int status = pybridge_channel_open(NULL, &declaration, &channel);
    while (status == PYBRIDGE_OK && (status = pybridge_channel_wait(channel, &request)) == PYBRIDGE_OK) {
        double cost = 0.0;
        unsigned i;
        for (i = 0; i < request.n_params; ++i) cost += request.params[i] * request.params[i];
        status = pybridge_channel_reply(channel, cost);
    }
    if (status != PYBRIDGE_CLOSED) fprintf(stderr, "%s\n", pybridge_channel_last_error(channel));
    pybridge_channel_close(channel);
    return status == PYBRIDGE_CLOSED ? 0 : 1;
}
