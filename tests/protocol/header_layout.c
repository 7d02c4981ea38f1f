/* Prints the header layout and the protocol constants as a C compiler sees
 * them. Compiled as strict C99 by test_header.py: the public headers must be
 * valid C, and the Python mirror must match what C code sees. */
#include <pybridge/driver.h>
#include <pybridge/pybridge.h>

#include <stddef.h>
#include <stdio.h>

#define FIELD(member)                                                                   \
    printf("field %s %zu %zu\n", #member, offsetof(pybridge_header, member), \
           sizeof(((pybridge_header *)0)->member))
#define CONSTANT(name) printf("constant %s %lld\n", #name, (long long)(name))

int main(void) {
    FIELD(magic);
    FIELD(version);
    FIELD(header_size);
    FIELD(segment_size);
    FIELD(driver_pid);
    FIELD(simulator_pid);
    FIELD(state);
    FIELD(declared_n_params);
    FIELD(declared_n_residuals);
    FIELD(declared_capabilities);
    FIELD(n_params);
    FIELD(n_residuals);
    FIELD(capabilities);
    FIELD(spin_us);
    FIELD(params_offset);
    FIELD(gradient_offset);
    FIELD(residuals_offset);
    FIELD(declared_max_batch);
    FIELD(max_batch);
    FIELD(costs_offset);
    FIELD(request_seq);
    FIELD(request_kind);
    FIELD(driver_sleeping);
    FIELD(request_count);
    FIELD(request_flags);
    FIELD(reply_seq);
    FIELD(reply_status);
    FIELD(simulator_sleeping);
    FIELD(cost);
    FIELD(picked_at_ns);
    FIELD(replied_at_ns);
    FIELD(reply_semaphore);
    FIELD(doorbell);
    FIELD(error);
    printf("size %zu\n", sizeof(pybridge_header));
    CONSTANT(PYBRIDGE_PROTOCOL_VERSION);
    CONSTANT(PYBRIDGE_OK);
    CONSTANT(PYBRIDGE_CLOSED);
    CONSTANT(PYBRIDGE_TIMEOUT);
    CONSTANT(PYBRIDGE_E_INVALID_ARGUMENT);
    CONSTANT(PYBRIDGE_E_NO_CHANNEL);
    CONSTANT(PYBRIDGE_E_SYSTEM);
    CONSTANT(PYBRIDGE_E_PROTOCOL);
    CONSTANT(PYBRIDGE_E_REJECTED);
    CONSTANT(PYBRIDGE_E_DRIVER_GONE);
    CONSTANT(PYBRIDGE_E_TAKEN);
    CONSTANT(PYBRIDGE_E_NO_SPACE);
    CONSTANT(PYBRIDGE_OUTCOME_NOT_SENT);
    CONSTANT(PYBRIDGE_OUTCOME_PENDING);
    CONSTANT(PYBRIDGE_OUTCOME_ANSWERED);
    CONSTANT(PYBRIDGE_STATE_CREATED);
    CONSTANT(PYBRIDGE_STATE_DECLARED);
    CONSTANT(PYBRIDGE_STATE_READY);
    CONSTANT(PYBRIDGE_STATE_REJECTED);
    CONSTANT(PYBRIDGE_STATE_CLOSED);
    CONSTANT(PYBRIDGE_CAP_GRADIENT);
    CONSTANT(PYBRIDGE_CAP_RESIDUALS);
    CONSTANT(PYBRIDGE_REQUEST_COST);
    CONSTANT(PYBRIDGE_REQUEST_GRADIENT);
    CONSTANT(PYBRIDGE_REQUEST_RESIDUALS);
    CONSTANT(PYBRIDGE_REPLY_OK);
    CONSTANT(PYBRIDGE_REPLY_FAILED);
    return 0;
}
