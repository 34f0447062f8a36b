/* meshload: the load generator and echo upstream of the sofamesh benchmark suite.
 *
 * Python cannot drive a proxy hard enough to measure it, so benchmarks/run.py builds this with gcc.
 * It speaks just enough Bolt v1, Dubbo 2 and HTTP/1.1 framing to count frames and match request ids.
 *
 *   meshload serve PORT PROTO TEMPLATE          echo upstream: every request frame is answered with
 *                                               TEMPLATE (a response frame) carrying the request's id;
 *                                               heartbeats get heartbeat replies. PROTO: bolt|dubbo|http
 *   meshload load PORT PROTO REQUEST CONNS INFLIGHT SECONDS [RATE]
 *                                               CONNS connections, INFLIGHT requests outstanding on each,
 *                                               for SECONDS; prints one JSON object (req/s, p50, p99,
 *                                               its own CPU seconds). With RATE > 0, a fixed offered
 *                                               load: at most RATE requests a second in all (paced
 *                                               every millisecond), still at most INFLIGHT per
 *                                               connection; without it, as fast as answers come back
 *   meshload idle PORT N SECONDS                opens up to N idle connections within SECONDS, prints
 *                                               "ready <opened>", holds them for SECONDS (or until stdin
 *                                               closes), then exits
 *
 * 127.0.0.1 only. Every mode ends by itself. No dependencies beyond libc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum proto { BOLT, DUBBO, HTTP };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t be16(const uint8_t *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static enum proto parse_proto(const char *s) {
    if (!strcmp(s, "bolt")) return BOLT;
    if (!strcmp(s, "dubbo")) return DUBBO;
    if (!strcmp(s, "http")) return HTTP;
    fprintf(stderr, "unknown protocol %s\n", s);
    exit(2);
}

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    struct stat st;
    fstat(fileno(f), &st);
    uint8_t *buf = malloc(st.st_size + 1);
    *len = fread(buf, 1, st.st_size, f);
    fclose(f);
    return buf;
}

/* Length of the complete frame at p (0 when more bytes are needed). HTTP: up to the blank line. */
static size_t frame_len(enum proto pr, const uint8_t *p, size_t n) {
    if (pr == BOLT) {
        if (n < 2) return 0;
        if (p[1] == 0) { /* response */
            if (n < 20) return 0;
            return 20 + be16(p + 12) + be16(p + 14) + be32(p + 16);
        }
        if (n < 22) return 0;
        return 22 + be16(p + 14) + be16(p + 16) + be32(p + 18);
    }
    if (pr == DUBBO) {
        if (n < 16) return 0;
        return 16 + be32(p + 12);
    }
    const uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - p) + 4;
    /* responses carry a Content-Length; requests from wrk have no body */
    const char *cl = memmem(p, head, "Content-Length:", 15);
    if (!cl) cl = memmem(p, head, "content-length:", 15);
    if (cl) {
        size_t body = strtoul(cl + 15, NULL, 10);
        if (n < head + body) return 0;
        return head + body;
    }
    return head;
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }
static void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int connect_local(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
    set_nodelay(fd);
    return fd;
}

typedef struct {
    int fd;
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_len, out_cap;
    uint32_t next_id;
    int outstanding;
    double sent_at[4096];
} conn_t;

static void out_append(conn_t *c, const uint8_t *p, size_t n) {
    if (c->out_len + n > c->out_cap) {
        c->out_cap = (c->out_len + n) * 2;
        c->out = realloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

/* write what we can; returns -1 on a dead peer */
static int flush_out(conn_t *c) {
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t w = write(c->fd, c->out + off, c->out_len - off);
        if (w < 0) {
            if (errno == EAGAIN) break;
            if (errno == EINTR) continue;
            return -1;
        }
        off += (size_t)w;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    return 0;
}

static int read_in(conn_t *c) {
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            c->in_cap = c->in_cap * 2 + 65536;
            c->in = realloc(c->in, c->in_cap);
        }
        ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (r > 0) { c->in_len += (size_t)r; if ((size_t)r < 65536) return 0; continue; }
        if (r == 0) return -1;
        if (errno == EAGAIN) return 0;
        if (errno == EINTR) continue;
        return -1;
    }
}

/* ---------------------------------------------------------------- serve */
static int serve(int port, enum proto pr, const uint8_t *tmpl, size_t tlen) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0) { perror("bind"); return 1; }
    set_nonblock(ls);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("ready %d\n", port);
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, 1000);
        if (getppid() == 1) return 0; /* the benchmark that started us is gone */
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept(ls, NULL, NULL)) >= 0) {
                    set_nonblock(fd);
                    set_nodelay(fd);
                    conn_t *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e2);
                }
                continue;
            }
            if (read_in(c) < 0) {
                close(c->fd);
                free(c->in); free(c->out); free(c);
                continue;
            }
            size_t off = 0, fl;
            while ((fl = frame_len(pr, c->in + off, c->in_len - off)) && off + fl <= c->in_len) {
                const uint8_t *f = c->in + off;
                if (pr == BOLT && be16(f + 2) == 0) { /* heartbeat: reply in kind */
                    uint8_t hb[20] = {1, 0, 0, 0, 1, f[5], f[6], f[7], f[8], 1};
                    out_append(c, hb, sizeof hb);
                } else if (pr == DUBBO && (f[2] & 0x20)) {
                    uint8_t hb[17] = {0xda, 0xbb, 0x22, 20};
                    memcpy(hb + 4, f + 4, 8);
                    hb[15] = 1; hb[16] = 0x4e;
                    if (f[2] & 0x80) out_append(c, hb, sizeof hb);
                } else if (pr == BOLT) {
                    if (f[1] != 2) { /* not oneway */
                        size_t at = c->out_len;
                        out_append(c, tmpl, tlen);
                        memcpy(c->out + at + 5, f + 5, 4);
                    }
                } else if (pr == DUBBO) {
                    if (f[2] & 0x40) {
                        size_t at = c->out_len;
                        out_append(c, tmpl, tlen);
                        memcpy(c->out + at + 4, f + 4, 8);
                    }
                } else {
                    out_append(c, tmpl, tlen);
                }
                off += fl;
            }
            memmove(c->in, c->in + off, c->in_len - off);
            c->in_len -= off;
            if (c->out_len) {
                if (flush_out(c) < 0) { close(c->fd); free(c->in); free(c->out); free(c); continue; }
                if (c->out_len) { /* rare: block until drained, an echo server need not be clever */
                    int fl2 = fcntl(c->fd, F_GETFL);
                    fcntl(c->fd, F_SETFL, fl2 & ~O_NONBLOCK);
                    flush_out(c);
                    fcntl(c->fd, F_SETFL, fl2);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- load */
#define HIST_US 2000000
static uint32_t hist[HIST_US + 1];

static void put_request(conn_t *c, enum proto pr, const uint8_t *req, size_t rlen, double t) {
    uint32_t id = ++c->next_id;
    size_t at = c->out_len;
    out_append(c, req, rlen);
    uint8_t *p = c->out + at;
    if (pr == BOLT) {
        p[5] = id >> 24; p[6] = id >> 16; p[7] = id >> 8; p[8] = id;
    } else {
        memset(p + 4, 0, 4);
        p[8] = id >> 24; p[9] = id >> 16; p[10] = id >> 8; p[11] = id;
    }
    c->sent_at[id & 4095] = t;
    c->outstanding++;
}

static double pct(uint64_t total, double q) {
    uint64_t rank = (uint64_t)(q * total), seen = 0;
    for (uint32_t i = 0; i <= HIST_US; i++) {
        seen += hist[i];
        if (seen > rank) return i;
    }
    return HIST_US;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Fixed offered load: issue what the budget rate * elapsed allows, round-robin over connections
 * with a free slot. Returns -1 when a connection died. */
static int pace(conn_t *cs, int nconn, int inflight, enum proto pr, const uint8_t *req, size_t rlen, double rate,
                double start, double t, uint64_t *issued, int *next) {
    uint64_t budget = (uint64_t)(rate * (t - start));
    for (int tries = 0; *issued < budget && tries < nconn; tries++) {
        conn_t *c = &cs[*next];
        *next = (*next + 1) % nconn;
        if (c->fd < 0 || c->outstanding >= inflight) continue;
        put_request(c, pr, req, rlen, t);
        ++*issued;
        tries = -1; /* made progress: every connection may take another */
        if (flush_out(c) < 0) return -1;
    }
    return 0;
}

static int load(int port, enum proto pr, const uint8_t *req, size_t rlen, int nconn, int inflight, double secs,
                double rate) {
    if (inflight > 4000) inflight = 4000;
    conn_t *cs = calloc(nconn, sizeof *cs);
    int ep = epoll_create1(0);
    double t0 = now_s(), cpu0 = cpu_s();
    for (int i = 0; i < nconn; i++) {
        cs[i].fd = connect_local(port);
        if (cs[i].fd < 0) { fprintf(stderr, "connect %d failed\n", port); return 1; }
        set_nonblock(cs[i].fd);
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &e);
        if (rate > 0) continue; /* paced below */
        for (int k = 0; k < inflight; k++) put_request(&cs[i], pr, req, rlen, t0);
        flush_out(&cs[i]);
    }
    uint64_t done = 0, errors = 0, dead = 0, issued = 0;
    int next = 0;
    double start = now_s(), deadline = start + secs;
    struct epoll_event evs[256];
    double t = start;
    while (t < deadline && dead < (uint64_t)nconn) {
        if (rate > 0 && pace(cs, nconn, inflight, pr, req, rlen, rate, start, t, &issued, &next) < 0) dead++;
        int n = epoll_wait(ep, evs, 256, rate > 0 ? 1 : 100);
        t = now_s();
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (read_in(c) < 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                dead++;
                continue;
            }
            size_t off = 0, fl;
            int answered = 0;
            while ((fl = frame_len(pr, c->in + off, c->in_len - off)) && off + fl <= c->in_len) {
                const uint8_t *f = c->in + off;
                uint32_t id = pr == BOLT ? be32(f + 5) : be32(f + 8);
                int bad = pr == BOLT ? be16(f + 10) != 0 : f[3] != 20;
                int beat = pr == BOLT ? be16(f + 2) == 0 : (f[2] & 0x20) != 0;
                off += fl;
                if (beat) continue;
                double us = (t - c->sent_at[id & 4095]) * 1e6;
                if (us < 0) us = 0;
                hist[us > HIST_US ? HIST_US : (uint32_t)us]++;
                errors += bad;
                done++;
                answered++;
                c->outstanding--;
            }
            memmove(c->in, c->in + off, c->in_len - off);
            c->in_len -= off;
            if (rate > 0) continue; /* the pacer sends the next ones */
            for (int k = 0; k < answered; k++) put_request(c, pr, req, rlen, t);
            if (flush_out(c) < 0) { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); dead++; }
        }
    }
    double elapsed = t - start;
    printf("{\"requests\": %llu, \"errors\": %llu, \"dead_connections\": %llu, \"seconds\": %.3f, "
           "\"rps\": %.1f, \"p50_us\": %.0f, \"p99_us\": %.0f, \"cpu_s\": %.3f}\n",
           (unsigned long long)done, (unsigned long long)errors, (unsigned long long)dead, elapsed,
           done / elapsed, pct(done, 0.50), pct(done, 0.99), cpu_s() - cpu0);
    return 0;
}

/* ---------------------------------------------------------------- idle */
/* Non-blocking connects, at most 256 in progress, all within SECONDS; then hold until SECONDS
 * more pass or stdin closes. Reports how many got established, so a slow acceptor cannot hang us. */
static int idle(int port, int n, double secs) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ep = epoll_create1(0);
    int opened = 0, pending = 0, started = 0;
    double end = now_s() + secs;
    struct epoll_event evs[256];
    while (opened < n && now_s() < end) {
        while (started < n && pending < 256) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd < 0) { perror("socket"); end = 0; break; }
            int r = connect(fd, (struct sockaddr *)&a, sizeof a);
            started++;
            if (r == 0) { opened++; continue; }
            if (errno != EINPROGRESS) { close(fd); continue; }
            struct epoll_event e = {.events = EPOLLOUT, .data.fd = fd};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
            pending++;
        }
        int k = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < k; i++) {
            int fd = evs[i].data.fd, err = 0;
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            pending--;
            if (err) close(fd); else opened++;
        }
        if (started >= n && pending == 0) break;
    }
    printf("ready %d\n", opened);
    fflush(stdout);
    struct pollfd p = {.fd = 0, .events = POLLIN};
    end = now_s() + secs;
    while (now_s() < end) {
        if (poll(&p, 1, 200) > 0) {
            char b[64];
            if (read(0, b, sizeof b) <= 0) break;
        }
    }
    return opened == n ? 0 : 1;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc == 5 && !strcmp(argv[1], "serve")) {
        size_t tlen;
        uint8_t *tmpl = read_file(argv[4], &tlen);
        return serve(atoi(argv[2]), parse_proto(argv[3]), tmpl, tlen);
    }
    if ((argc == 8 || argc == 9) && !strcmp(argv[1], "load")) {
        size_t rlen;
        uint8_t *req = read_file(argv[4], &rlen);
        return load(atoi(argv[2]), parse_proto(argv[3]), req, rlen, atoi(argv[5]), atoi(argv[6]), atof(argv[7]),
                    argc == 9 ? atof(argv[8]) : 0.0);
    }
    if (argc == 5 && !strcmp(argv[1], "idle")) return idle(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
    fprintf(stderr, "usage: meshload serve PORT bolt|dubbo|http TEMPLATE\n"
                    "       meshload load PORT bolt|dubbo REQUEST CONNS INFLIGHT SECONDS [RATE]\n"
                    "       meshload idle PORT N SECONDS\n");
    return 2;
}
