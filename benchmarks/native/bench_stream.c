/* The transports a user would otherwise pick, around the same cost function.
 *   pybridge-bench-stream N pipe          requests on stdin, replies on stdout
 *   pybridge-bench-stream N unix PATH     one connection on a Unix socket
 *   pybridge-bench-stream N tcp           one connection on 127.0.0.1; prints the port first
 *   pybridge-bench-stream N file IN OUT   one evaluation: read IN, write OUT, exit
 * A request is N native doubles, a reply one double. */
#define _POSIX_C_SOURCE 200809L
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cost.h"

static int read_all(int fd, void *buffer, size_t size) {
    char *p = buffer;
    while (size > 0) {
        const ssize_t got = read(fd, p, size);
        if (got <= 0) return -1;
        p += got;
        size -= (size_t)got;
    }
    return 0;
}

static int write_all(int fd, const void *buffer, size_t size) {
    const char *p = buffer;
    while (size > 0) {
        const ssize_t put = write(fd, p, size);
        if (put <= 0) return -1;
        p += put;
        size -= (size_t)put;
    }
    return 0;
}

static void serve(int in, int out, double *x, size_t n) {
    while (read_all(in, x, n * sizeof(double)) == 0) {
        const double cost = bench_sum_squares(x, n);
        if (write_all(out, &cost, sizeof cost) != 0) break;
    }
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const size_t n = strtoull(argv[1], NULL, 10);
    double *x = malloc(n * sizeof(double));
    const char *mode = argv[2];
    if (strcmp(mode, "pipe") == 0) {
        serve(0, 1, x, n);
    } else if (strcmp(mode, "file") == 0 && argc == 5) {
        FILE *in = fopen(argv[3], "rb");
        if (in == NULL || fread(x, sizeof(double), n, in) != n) return 1;
        fclose(in);
        const double cost = bench_sum_squares(x, n);
        FILE *out = fopen(argv[4], "wb");
        if (out == NULL || fwrite(&cost, sizeof cost, 1, out) != 1) return 1;
        fclose(out);
    } else if (strcmp(mode, "unix") == 0 && argc == 4) {
        const int server = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un address = {0};
        address.sun_family = AF_UNIX;
        strncpy(address.sun_path, argv[3], sizeof address.sun_path - 1);
        if (bind(server, (struct sockaddr *)&address, sizeof address) != 0 || listen(server, 1) != 0) return 1;
        printf("ready\n");
        fflush(stdout);
        const int connection = accept(server, NULL, NULL);
        serve(connection, connection, x, n);
    } else if (strcmp(mode, "tcp") == 0) {
        const int server = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in address = {0};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t length = sizeof address;
        if (bind(server, (struct sockaddr *)&address, sizeof address) != 0 || listen(server, 1) != 0) return 1;
        getsockname(server, (struct sockaddr *)&address, &length);
        printf("%d\n", ntohs(address.sin_port));
        fflush(stdout);
        const int connection = accept(server, NULL, NULL);
        const int one = 1;
        setsockopt(connection, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        serve(connection, connection, x, n);
    } else {
        return 2;
    }
    free(x);
    return 0;
}
