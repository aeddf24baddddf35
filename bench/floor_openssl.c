/* The floor under an HTTPS probe with no Python at all (bench/floor.py --engine openssl).

   The same loop as bench/floor.py's: at a steady rate, an A lookup on a fresh UDP socket, a
   fresh TCP connection, a full TLS handshake verified against the lab CA (the CA store
   parsed once, the library's default groups and ciphers), GET with `Connection: close`, the
   body up to its Content-Length. Built by bench/floor.py against the OpenSSL the pycurl
   wheel bundles, so it is the cost of libcurl's own TLS library with nothing around it.

   usage: floor_openssl DNS_HOST DNS_PORT NAME PORT PATH CA_FILE RATE SECONDS RECORD

   Writes RECORD (JSON: started_at, failed, last_error, library) when the loop ends or on
   SIGTERM; a probe cut short by SIGTERM is not counted as failed, nor is its error kept.
   Reads answers of up to 64 KiB (the bench server's is about 1 KiB). */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_SECONDS 5

static volatile sig_atomic_t stopping;
static char probe_error[256]; /* why the probe under way failed */
static char last_error[256];  /* why the last counted failure failed: the record's */

static void on_sigterm(int signum) { (void)signum; stopping = 1; }

static double monotonic(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double wall(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int fail(const char *what) {
    snprintf(probe_error, sizeof probe_error, "%s", what);
    return -1;
}

/* Why an SSL call that returned `returned` failed: OpenSSL's reason (and the certificate's,
   if verification failed), else the socket's, where a timeout reads as one. */
static int fail_ssl(SSL *tls, int returned, const char *what) {
    int socket_error = errno, kind = SSL_get_error(tls, returned);
    /* On these blocking sockets only SO_RCVTIMEO / SO_SNDTIMEO make OpenSSL ask for a retry. */
    int timed_out = kind == SSL_ERROR_WANT_READ || kind == SSL_ERROR_WANT_WRITE ||
                    (kind == SSL_ERROR_SYSCALL &&
                     (socket_error == EAGAIN || socket_error == EWOULDBLOCK));
    unsigned long code = ERR_peek_error();
    long verify = SSL_get_verify_result(tls);
    char reason[160];
    if (code != 0) {
        ERR_error_string_n(code, reason, sizeof reason);
        if (verify != X509_V_OK)
            snprintf(probe_error, sizeof probe_error, "%s: %s (%s)", what, reason,
                     X509_verify_cert_error_string(verify));
        else
            snprintf(probe_error, sizeof probe_error, "%s: %s", what, reason);
    } else if (timed_out) {
        snprintf(probe_error, sizeof probe_error, "%s: timeout", what);
    } else if (kind == SSL_ERROR_SYSCALL && socket_error != 0) {
        snprintf(probe_error, sizeof probe_error, "%s: %s", what, strerror(socket_error));
    } else {
        snprintf(probe_error, sizeof probe_error, "%s: connection closed", what);
    }
    ERR_clear_error();
    return -1;
}

/* A socket whose blocking calls (connect included) give up after TIMEOUT_SECONDS. */
static int timed_socket(int type) {
    struct timeval limit = {TIMEOUT_SECONDS, 0};
    int fd = socket(AF_INET, type, 0);
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    }
    return fd;
}

/* The end of the name at `at`: past its terminating label or its compression pointer. */
static int skip_name(const unsigned char *wire, int size, int at) {
    while (at < size) {
        if (wire[at] == 0) return at + 1;
        if ((wire[at] & 0xC0) == 0xC0) return at + 2;
        at += 1 + wire[at];
    }
    return -1;
}

/* The first A record of an answer to query `id`, as bench/floor.py's first_a. */
static int first_a(const unsigned char *wire, int size, unsigned id, struct in_addr *out) {
    if (size < 12) return fail("short answer");
    if (((unsigned)wire[0] << 8 | wire[1]) != id || !(wire[2] & 0x80))
        return fail("not an answer to this query");
    if (wire[3] & 0x0F) return fail("error rcode");
    int questions = wire[4] << 8 | wire[5], records = wire[6] << 8 | wire[7], at = 12;
    for (int i = 0; i < questions && at >= 0; i++)
        if ((at = skip_name(wire, size, at)) >= 0) at += 4;
    for (int i = 0; i < records && at >= 0; i++) {
        if ((at = skip_name(wire, size, at)) < 0 || at + 10 > size) break;
        int type = wire[at] << 8 | wire[at + 1], length = wire[at + 8] << 8 | wire[at + 9];
        at += 10;
        if (type == 1 && length == 4 && at + 4 <= size) {
            memcpy(out, wire + at, 4);
            return 0;
        }
        at += length;
    }
    return fail("no A record");
}

static int lookup(const struct sockaddr_in *server, const char *name, struct in_addr *out) {
    unsigned char query[300] = {0}, answer[4096];
    unsigned id = (unsigned)rand() & 0xFFFF;
    int size = 12;
    query[0] = id >> 8, query[1] = id & 0xFF, query[2] = 0x01, query[5] = 1; /* RD, 1 question */
    for (const char *label = name; *label;) {
        size_t length = strcspn(label, ".");
        if (length == 0 || length > 63 || size + length + 6 > sizeof query) return fail("bad name");
        query[size++] = (unsigned char)length;
        memcpy(query + size, label, length);
        size += (int)length;
        label += length + (label[length] == '.');
    }
    size += 1;                                   /* the root label */
    query[size + 1] = 1, query[size + 3] = 1;    /* type A, class IN */
    size += 4;
    int fd = timed_socket(SOCK_DGRAM), got = -1, error = 0;
    if (fd < 0) return fail("dns socket");
    if (connect(fd, (const struct sockaddr *)server, sizeof *server) == 0 &&
        send(fd, query, size, 0) == size)
        got = (int)recv(fd, answer, sizeof answer, 0);
    if (got < 0) error = errno;
    close(fd);
    if (error == EAGAIN || error == EWOULDBLOCK) return fail("dns timeout");
    if (got < 0) return fail("dns exchange");
    return first_a(answer, got, id, out);
}

/* Whether `answer` holds a whole HTTP/1.1 2xx answer: its head and Content-Length bytes. */
static int complete(const char *answer, int size, int *status_ok) {
    const char *end = strstr(answer, "\r\n\r\n");
    if (!end) return 0;
    const char *length = strcasestr(answer, "\r\ncontent-length:");
    if (!length || length > end) return 0;
    *status_ok = strncmp(answer, "HTTP/1.1 2", 10) == 0;
    return size - (int)(end + 4 - answer) >= atoi(length + 17);
}

static int exchange(SSL_CTX *context, struct in_addr address, int port, const char *host,
                    const char *request) {
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = address};
    int fd = timed_socket(SOCK_STREAM), one = 1, result = -1;
    if (fd < 0) return fail("tcp socket");
    SSL *tls = NULL;
    if (connect(fd, (const struct sockaddr *)&to, sizeof to) != 0) {
        fail("connect");
        goto done;
    }
    /* As libcurl and Go do: else the request waits behind the Finished for a delayed ACK. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    tls = SSL_new(context);
    if (!tls || !SSL_set_fd(tls, fd) || !SSL_set_tlsext_host_name(tls, host) ||
        !SSL_set1_host(tls, host)) {
        fail("tls setup");
        goto done;
    }
    int returned = SSL_connect(tls);
    if (returned != 1) {
        fail_ssl(tls, returned, "handshake");
        goto done;
    }
    if ((returned = SSL_write(tls, request, (int)strlen(request))) <= 0) {
        fail_ssl(tls, returned, "write");
        goto done;
    }
    char answer[65536];
    int size = 0, status_ok = 0;
    while (size < (int)sizeof answer - 1) {
        if ((returned = SSL_read(tls, answer + size, (int)sizeof answer - 1 - size)) <= 0) {
            fail_ssl(tls, returned, "answer cut short");
            goto done;
        }
        size += returned;
        answer[size] = '\0';
        if (complete(answer, size, &status_ok)) {
            result = status_ok ? 0 : fail("not a 2xx answer");
            goto done;
        }
    }
    fail("answer over 64 KiB");
done:
    SSL_free(tls);
    close(fd);
    return result;
}

/* `text` as a JSON string body: quotes, backslashes and control characters dropped. */
static void write_json_text(FILE *out, const char *text) {
    for (; *text; text++)
        if (*text != '"' && *text != '\\' && (unsigned char)*text >= 0x20) fputc(*text, out);
}

static int write_record(const char *path, const double *started, int count, int failed) {
    FILE *out = fopen(path, "w");
    if (!out) return perror(path), 1;
    fputs("{\"started_at\": [", out);
    for (int i = 0; i < count; i++) fprintf(out, "%s%.6f", i ? ", " : "", started[i]);
    fprintf(out, "], \"failed\": %d, \"last_error\": ", failed);
    if (failed) {
        fputc('"', out);
        write_json_text(out, last_error);
        fputc('"', out);
    } else {
        fputs("null", out);
    }
    fputs(", \"library\": \"", out);
    write_json_text(out, OpenSSL_version(OPENSSL_VERSION));
    fputs("\"}\n", out);
    return fclose(out) != 0;
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fputs("usage: floor_openssl DNS_HOST DNS_PORT NAME PORT PATH CA_FILE RATE SECONDS RECORD\n",
              stderr);
        return 2;
    }
    const char *name = argv[3], *path = argv[5], *ca_file = argv[6], *record = argv[9];
    int dns_port = atoi(argv[2]), port = atoi(argv[4]);
    double rate = atof(argv[7]), seconds = atof(argv[8]);
    struct sockaddr_in dns = {.sin_family = AF_INET, .sin_port = htons(dns_port)};
    if (inet_pton(AF_INET, argv[1], &dns.sin_addr) != 1 || dns_port <= 0 || dns_port > 65535 ||
        port <= 0 || port > 65535 || rate <= 0 || seconds < 0) {
        fputs("floor_openssl: bad DNS_HOST, DNS_PORT, PORT, RATE or SECONDS\n", stderr);
        return 2;
    }
    /* No SA_RESTART: SIGTERM interrupts a sleep or a blocking call, and the loop ends. */
    struct sigaction stop = {.sa_handler = on_sigterm};
    sigaction(SIGTERM, &stop, NULL);
    signal(SIGPIPE, SIG_IGN); /* a server hanging up mid-write is a failed probe, not our end */
    srand((unsigned)(getpid() ^ (unsigned)wall()));

    SSL_CTX *context = SSL_CTX_new(TLS_client_method());
    if (!context || SSL_CTX_load_verify_locations(context, ca_file, NULL) != 1) {
        char reason[160];
        ERR_error_string_n(ERR_get_error(), reason, sizeof reason);
        fprintf(stderr, "floor_openssl: %s: %s\n", ca_file, reason);
        return 1;
    }
    SSL_CTX_set_verify(context, SSL_VERIFY_PEER, NULL);
    char request[1024];
    snprintf(request, sizeof request,
             "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n", path, name, port);

    int capacity = (int)(rate * seconds) + 64, count = 0, failed = 0;
    double *started = malloc(sizeof *started * capacity);
    if (!started) return perror("malloc"), 1;
    double step = 1.0 / rate, ends = monotonic() + seconds, due = monotonic();
    while (!stopping && due < ends && count < capacity) {
        double pause = due - monotonic();
        if (pause > 0) {
            struct timespec nap = {(time_t)pause, (long)((pause - (time_t)pause) * 1e9)};
            if (nanosleep(&nap, NULL) != 0) continue;  /* SIGTERM: the loop's test ends it */
        }
        started[count++] = wall();
        ERR_clear_error(); /* an error is this probe's own */
        struct in_addr address;
        int ok = lookup(&dns, name, &address) == 0 &&
                 exchange(context, address, port, name, request) == 0;
        if (!ok && !stopping) { /* cut short by SIGTERM: not a failure */
            failed++;
            memcpy(last_error, probe_error, sizeof last_error);
        }
        double now = monotonic();
        due = due + step > now - step ? due + step : now - step;  /* late: skip, do not bunch up */
    }
    SSL_CTX_free(context);
    return write_record(record, started, count, failed);
}
