/* Open-loop HTTP load: POST requests at a fixed rate, whether or not earlier ones were answered, as
 * independent users send them (the wrk2 idea), and each latency counted from the moment its request was due,
 * so a stalled server cannot hide its queue. One thread and epoll: at a few hundred requests per second it
 * takes a few percent of a core, where the Python generator it replaces took a good part of one, which on a
 * 2-core machine came out of the server's share.
 *
 *   cc -O2 -o open_loop open_loop.c -lm
 *   open_loop PORT RATE SECONDS MAX_CONNECTIONS BODIES_FILE   (one JSON body per line; prints one JSON object)
 *
 * benchmarks/serve_load.py builds and runs it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    int busy;       /* a request is in flight on it */
    int connected;  /* requests are written at once (a new connection waits for its first EPOLLOUT) */
    long served;    /* responses it delivered: a kept-alive connection the server may since have closed */
    long request;   /* index of the request in flight */
    double due;     /* when that request was due */
    int attempt;
    char buffer[16384];
    size_t filled;
} Connection;

static char **requests;
static size_t *request_sizes;
static long request_count;
static int port, epoll_fd, max_connections, open_count;
static Connection *connections;
static double *latencies;
static long measured, answered, connection_errors, server_errors, opened;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int open_connection(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void load_bodies(const char *path) {
    FILE *file = fopen(path, "r");
    if (!file) {
        perror(path);
        exit(2);
    }
    char *line = NULL;
    size_t capacity = 0;
    ssize_t length;
    long allocated = 1024;
    requests = malloc(allocated * sizeof *requests);
    request_sizes = malloc(allocated * sizeof *request_sizes);
    while ((length = getline(&line, &capacity, file)) > 0) {
        if (line[length - 1] == '\n') line[--length] = 0;
        if (!length) continue;
        if (request_count == allocated) {
            allocated *= 2;
            requests = realloc(requests, allocated * sizeof *requests);
            request_sizes = realloc(request_sizes, allocated * sizeof *request_sizes);
        }
        char *request = NULL;
        int size = asprintf(&request,
                            "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            "Content-Length: %zd\r\n\r\n%s",
                            length, line);
        requests[request_count] = request;
        request_sizes[request_count++] = (size_t)size;
    }
    free(line);
    fclose(file);
}

/* The connection request `index` goes out on: an idle one (not for a retry, which takes a fresh one), else a new
 * one while fewer than max_connections are open; NULL when every connection is busy. */
static Connection *free_connection(int fresh) {
    int closed_slot = -1;
    for (int i = 0; i < open_count; i++) {
        if (connections[i].fd < 0) closed_slot = i;
        else if (!connections[i].busy && !fresh) return &connections[i];
    }
    int slot = closed_slot >= 0 ? closed_slot : (open_count < max_connections ? open_count++ : -1);
    if (slot < 0) return NULL;
    Connection *connection = &connections[slot];
    connection->fd = open_connection();
    if (connection->fd < 0) return NULL;
    connection->connected = 0;
    connection->served = 0;
    opened++;
    struct epoll_event event = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = connection};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, connection->fd, &event);
    return connection;
}

static int write_request(Connection *connection) {
    long index = connection->request % request_count;
    return send(connection->fd, requests[index], request_sizes[index], MSG_NOSIGNAL) >= 0;
}

static void fail(Connection *connection);

/* Sends request `index`, due at `due`; false when every connection is busy (it then waits in the backlog). */
static int send_request(long index, double due, int attempt) {
    Connection *connection = free_connection(attempt > 0);
    if (!connection) return 0;
    connection->busy = 1;
    connection->request = index;
    connection->due = due;
    connection->attempt = attempt;
    connection->filled = 0;
    /* A new connection is written to once it is connected (its first EPOLLOUT); an established one at once. */
    if (connection->connected && !write_request(connection)) fail(connection);
    return 1;
}

/* A connection that broke: a keep-alive the server had closed before this request (nothing read yet, first
 * attempt) is retried once on a new connection, as HTTP clients do; anything else is an error. */
static void fail(Connection *connection) {
    int retry = connection->served && !connection->filled && !connection->attempt;
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, connection->fd, NULL);
    close(connection->fd);
    connection->fd = -1;
    connection->busy = 0;
    if (retry && send_request(connection->request, connection->due, 1)) return;
    connection_errors++;
    answered++;
}

/* Reads what arrived; true once the whole response to the request in flight is in. */
static int read_response(Connection *connection) {
    for (;;) {
        ssize_t got = recv(connection->fd, connection->buffer + connection->filled,
                           sizeof connection->buffer - 1 - connection->filled, 0);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (got <= 0) {
            fail(connection);
            return 0;
        }
        connection->filled += got;
        connection->buffer[connection->filled] = 0;
        char *end = strstr(connection->buffer, "\r\n\r\n");
        char *length = strcasestr(connection->buffer, "content-length:");
        if (end && length && connection->filled >= (size_t)(end + 4 - connection->buffer) + strtoul(length + 15, NULL, 10))
            return 1;
    }
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s PORT RATE SECONDS MAX_CONNECTIONS BODIES_FILE\n", argv[0]);
        return 2;
    }
    port = atoi(argv[1]);
    double rate = atof(argv[2]), seconds = atof(argv[3]);
    max_connections = atoi(argv[4]);
    load_bodies(argv[5]);
    if (!request_count) {
        fprintf(stderr, "no request bodies in %s\n", argv[5]);
        return 2;
    }
    long total = (long)(rate * seconds), sent = 0, backlog_head = 0;
    latencies = malloc((total + 1) * sizeof *latencies);
    connections = calloc(max_connections, sizeof *connections);
    epoll_fd = epoll_create1(0);
    double start = now() + 0.05, deadline = start + seconds + 60;
    while (answered < total && now() < deadline) {
        double current = now();
        while (sent < total && start + sent / rate <= current) sent++;  /* due: requests [backlog_head, sent) */
        while (backlog_head < sent && send_request(backlog_head, start + backlog_head / rate, 0)) backlog_head++;
        double wait_ms = sent < total ? (start + sent / rate - now()) * 1000 : 100;
        struct epoll_event events[64];
        int ready = epoll_wait(epoll_fd, events, 64, wait_ms > 0 ? (int)wait_ms + 1 : 0);
        for (int e = 0; e < ready; e++) {
            Connection *connection = events[e].data.ptr;
            if (connection->fd < 0 || !connection->busy) continue;
            if ((events[e].events & EPOLLOUT) && !connection->connected) {
                connection->connected = 1;
                if (!write_request(connection)) {
                    fail(connection);
                    continue;
                }
            }
            if (!(events[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || !read_response(connection)) continue;
            latencies[measured++] = now() - connection->due;
            if (strncmp(connection->buffer, "HTTP/1.1 200", 12)) server_errors++;
            answered++;
            connection->busy = 0;
            connection->filled = 0;
            connection->served++;
        }
    }
    double elapsed = now() - start;
    qsort(latencies, measured, sizeof *latencies, compare);
#define PERCENTILE(p) (measured ? 1000 * latencies[(long)((p) * measured) < measured ? (long)((p) * measured) : measured - 1] : -1.0)
    printf("{\"target_requests_per_s\": %.2f, \"requests\": %ld, \"achieved_requests_per_s\": %.2f, "
           "\"latency_ms_p50\": %.3f, \"latency_ms_p90\": %.3f, \"latency_ms_p99\": %.3f, \"errors\": %ld, "
           "\"error_kinds\": {\"connection\": %ld, \"status\": %ld, \"unanswered\": %ld}, "
           "\"connections_opened\": %ld}\n",
           rate, total, measured / elapsed, PERCENTILE(0.50), PERCENTILE(0.90), PERCENTILE(0.99),
           connection_errors + server_errors + (total - answered), connection_errors, server_errors, total - answered,
           opened);
    return 0;
}
