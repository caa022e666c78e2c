/* sinkd -- a fast, scriptable HTTP sink used by sluice's tests and benchmarks.
 * It accepts any request, optionally records it as one NDJSON line, and
 * answers from per-path scripts (status sequences, failure windows, latency,
 * forced closes) so tests can drive the worker's retry and backoff logic.
 * It is built on libmicrohttpd's epoll thread pool and never blocks a worker
 * thread on latency, so it is not the bottleneck of a benchmark.
 *
 * Control endpoints (under /_sinkd/): GET stats, POST reset, POST flush,
 * POST script with a JSON object; unknown keys are refused so that a typo
 * in a test fails loudly:
 *   path           request path the script applies to, or "*" (required)
 *   statuses       [status, ...] answered in order, one per request;
 *                  0 drops the connection without a reply
 *   then           status once statuses is used up (default 200)
 *   latency_ms     delay before every answer (default 0)
 *   close          answer with "Connection: close" (default false)
 *   retry_after    Retry-After seconds on non-2xx answers (default none)
 *   fail_for_ms    answer fail_status to everything for this long from now
 *   fail_status    status of that failure window (default 503)
 *   reject_every   N >= 1: a request whose Idempotency-Key hashes (32-bit
 *                  FNV-1a) to 0 modulo N gets reject_status, every time it
 *                  is sent; no header, never rejected (default 0: off)
 *   reject_status  status of those rejections (default 400)
 *   echo_headers   every non-2xx body is {"error": ..., "request_headers":
 *                  {name: value}}, as a sink that leaks e.g. Authorization
 *                  into its errors does (default false)
 *   body           the body of non-2xx answers when echo_headers is false
 *                  (default empty)
 *   chaos          {"503": P, "429": P, "timeout": P, "reset": P,
 *                  "timeout_ms": MS, "seed": N}: each request draws one
 *                  fault with these percentages (integers, sum <= 100;
 *                  the rest go on to statuses/then).  503 and 429 are
 *                  plain answers (429 carries Retry-After: retry_after,
 *                  else 1); "timeout" answers 200 only after timeout_ms
 *                  (default 30000: beyond a client's timeout); "reset"
 *                  aborts the connection with a TCP RST (SO_LINGER 0)
 *                  instead of answering.  The draws come from a PRNG
 *                  seeded with seed (default 1), so a run is repeatable
 *                  for the same request order.
 *   hang           accept the request and never answer (the connection
 *                  is held open until the client gives up or sinkd
 *                  stops) (default false)
 * Precedence: a failure window, then reject_every, then hang, then chaos,
 * then statuses, then then.  Every answer, rejected or not, counts in
 * stats and the record; a request that got a fault (timeout, reset, hang)
 * is recorded with "fault": NAME, and with status 0 when it got no
 * answer at all (reset, hang).  stats counts faults in "faults". */

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SINKD_MAX_BODY     (16u * 1024u * 1024u)
#define SINKD_NSTATUS      600          /* statuses are 0 or 200..599 */
#define SINKD_FLUSH_NS     (200 * 1000000LL)
#define SINKD_REC_HIGH     (1u << 20)   /* flush inline past 1 MiB buffered */
#define SINKD_CTL_PREFIX   "/_sinkd/"
#define SINKD_MAX_LATENCY  3600000L

/* ---- small helpers --------------------------------------------------- */

/* A test tool has no sensible way to continue without memory. */
static void *sinkd_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL) {
		fputs("sinkd: out of memory\n", stderr);
		abort();
	}
	return q;
}

static void *sinkd_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL) {
		fputs("sinkd: out of memory\n", stderr);
		abort();
	}
	return p;
}

static int64_t sinkd_now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static bool sinkd_parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool sinkd_write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* ---- growable string buffer and JSON encoding ------------------------ */

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sinkd_sb_grow(struct sbuf *b, size_t extra)
{
	size_t cap;

	if (b->cap - b->len >= extra)
		return;
	cap = b->cap ? b->cap : 256;
	while (cap - b->len < extra)
		cap *= 2;
	b->p = sinkd_xrealloc(b->p, cap);
	b->cap = cap;
}

static void sinkd_sb_put(struct sbuf *b, const void *d, size_t n)
{
	if (n == 0)
		return;
	sinkd_sb_grow(b, n);
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void sinkd_sb_putc(struct sbuf *b, char c)
{
	sinkd_sb_grow(b, 1);
	b->p[b->len++] = c;
}

static void sinkd_sb_puts(struct sbuf *b, const char *s)
{
	sinkd_sb_put(b, s, strlen(s));
}

static void sinkd_sb_putll(struct sbuf *b, long long v)
{
	char t[24];
	int n = snprintf(t, sizeof t, "%lld", v);

	if (n > 0)
		sinkd_sb_put(b, t, (size_t)n);
}

static void sinkd_sb_putull(struct sbuf *b, unsigned long long v)
{
	char t[24];
	int n = snprintf(t, sizeof t, "%llu", v);

	if (n > 0)
		sinkd_sb_put(b, t, (size_t)n);
}

/* Length of the well-formed UTF-8 sequence at s, or 0 (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF). */
static size_t sinkd_utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return 1;
	if (c < 0xC2)
		return 0;
	if (c < 0xE0)
		return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
	if (c < 0xF0) {
		if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0))
			return 0;
		return 3;
	}
	if (c < 0xF5) {
		if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
		    (s[3] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90))
			return 0;
		return 4;
	}
	return 0;
}

static bool sinkd_utf8_valid(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		size_t k;

		if (u[i] < 0x80) {
			i++;
			continue;
		}
		k = sinkd_utf8_len(u + i, n - i);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

/* Emit s as a JSON string.  Bytes that are not valid UTF-8 become \u00XX
 * (read as Latin-1) so the output is always valid JSON; bodies are
 * checked beforehand and go to body_b64 instead. */
static void sinkd_sb_json_str(struct sbuf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run = 0;

	sinkd_sb_putc(b, '"');
	while (i < n) {
		unsigned char c = u[i];
		char esc[6];

		if (c >= 0x80) {
			size_t k = sinkd_utf8_len(u + i, n - i);

			if (k != 0) {
				i += k;
				continue;
			}
		} else if (c >= 0x20 && c != '"' && c != '\\') {
			i++;
			continue;
		}
		sinkd_sb_put(b, s + run, i - run);
		switch (c) {
		case '"':  sinkd_sb_put(b, "\\\"", 2); break;
		case '\\': sinkd_sb_put(b, "\\\\", 2); break;
		case '\n': sinkd_sb_put(b, "\\n", 2); break;
		case '\r': sinkd_sb_put(b, "\\r", 2); break;
		case '\t': sinkd_sb_put(b, "\\t", 2); break;
		default:
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			sinkd_sb_put(b, esc, 6);
			break;
		}
		i++;
		run = i;
	}
	sinkd_sb_put(b, s + run, n - run);
	sinkd_sb_putc(b, '"');
}

static void sinkd_sb_base64(struct sbuf *b, const unsigned char *d, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;

	sinkd_sb_grow(b, (n + 2) / 3 * 4);
	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];

		b->p[b->len++] = tab[v >> 18];
		b->p[b->len++] = tab[(v >> 12) & 63];
		b->p[b->len++] = tab[(v >> 6) & 63];
		b->p[b->len++] = tab[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)d[i] << 16;

		if (i + 1 < n)
			v |= (uint32_t)d[i + 1] << 8;
		b->p[b->len++] = tab[v >> 18];
		b->p[b->len++] = tab[(v >> 12) & 63];
		b->p[b->len++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		b->p[b->len++] = '=';
	}
}

/* ---- record writer --------------------------------------------------- */

/* Appenders only touch `buf` under `mu`; a flush swaps it with `spare` and
 * writes outside `mu` but under `wmu`, so writes stay in order and a flush
 * returns only once everything appended before it is in the file. */
struct sinkd_rec {
	int fd;
	pthread_mutex_t mu;
	pthread_mutex_t wmu;
	struct sbuf buf;
	struct sbuf spare;
	bool failed;
};

static void sinkd_rec_flush(struct sinkd_rec *r)
{
	struct sbuf tmp;

	if (r->fd < 0)
		return;
	pthread_mutex_lock(&r->wmu);
	pthread_mutex_lock(&r->mu);
	tmp = r->buf;
	r->buf = r->spare;
	r->spare = tmp;
	pthread_mutex_unlock(&r->mu);
	if (r->spare.len > 0 && !sinkd_write_all(r->fd, r->spare.p, r->spare.len) &&
	    !r->failed) {
		r->failed = true;
		perror("sinkd: writing record file");
	}
	r->spare.len = 0;
	pthread_mutex_unlock(&r->wmu);
}

static void sinkd_rec_append(struct sinkd_rec *r, const char *line, size_t n)
{
	bool full;

	pthread_mutex_lock(&r->mu);
	sinkd_sb_put(&r->buf, line, n);
	full = r->buf.len >= SINKD_REC_HIGH;
	pthread_mutex_unlock(&r->mu);
	if (full)
		sinkd_rec_flush(r);
}

/* ---- scripts, per-path counters -------------------------------------- */

/* What a chaos script can draw for one request, in the order the
 * percentages are laid end to end on [0, 100). */
enum sinkd_draw {
	SINKD_DRAW_503,
	SINKD_DRAW_429,
	SINKD_DRAW_TIMEOUT,
	SINKD_DRAW_RESET,
	SINKD_NFAULTDRAW
};

static const char *const sinkd_draw_names[SINKD_NFAULTDRAW] = {
	"503", "429", "timeout", "reset",
};

/* Faults a request can get instead of a plain answer; recorded and
 * counted by name. */
enum sinkd_fault {
	SINKD_FAULT_NONE,
	SINKD_FAULT_TIMEOUT,
	SINKD_FAULT_RESET,
	SINKD_FAULT_HANG,
	SINKD_NFAULT
};

static const char *const sinkd_fault_names[SINKD_NFAULT] = {
	"", "timeout", "reset", "hang",
};

struct sinkd_script {
	int *statuses;
	size_t nstatuses, next;
	int then_status;
	long latency_ms;
	bool close;
	long retry_after;       /* -1: none */
	int64_t fail_until_ns;  /* CLOCK_MONOTONIC; 0: no failure window */
	int fail_status;
	long reject_every;      /* 0: off; see sinkd_rejects() */
	int reject_status;
	bool echo_headers;      /* non-2xx bodies show the request headers */
	char *body;             /* non-2xx body; NULL: empty */
	bool hang;              /* never answer */
	int chaos_pct[SINKD_NFAULTDRAW];  /* percent per enum sinkd_draw */
	long chaos_timeout_ms;
	uint64_t chaos_rng;     /* splitmix64 state, guarded by st->mu */
};

struct sinkd_path {
	struct sinkd_path *next;
	uint64_t hash;
	uint64_t count;
	struct sinkd_script *script;
	size_t len;
	char name[];
};

struct sinkd_state {
	pthread_mutex_t mu;     /* guards everything below */
	struct sinkd_path **tab;
	size_t tab_size, npaths;
	struct sinkd_script *dflt;  /* the "*" script */
	uint64_t requests, bytes;
	uint64_t by_status[SINKD_NSTATUS];
	uint64_t faults[SINKD_NFAULT];
};

static void sinkd_script_free(struct sinkd_script *s)
{
	if (s != NULL) {
		free(s->body);
		free(s->statuses);
		free(s);
	}
}

static uint64_t sinkd_hash(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;   /* FNV-1a */
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* Caller holds st->mu. */
static struct sinkd_path *sinkd_path_get(struct sinkd_state *st,
					 const char *name, size_t len)
{
	uint64_t h = sinkd_hash(name, len);
	struct sinkd_path *p;
	size_t i;

	for (p = st->tab[h & (st->tab_size - 1)]; p != NULL; p = p->next)
		if (p->hash == h && p->len == len && memcmp(p->name, name, len) == 0)
			return p;

	if (st->npaths >= st->tab_size) {
		size_t nsize = st->tab_size * 2;
		struct sinkd_path **ntab = sinkd_xcalloc(nsize, sizeof *ntab);

		for (i = 0; i < st->tab_size; i++) {
			while ((p = st->tab[i]) != NULL) {
				st->tab[i] = p->next;
				p->next = ntab[p->hash & (nsize - 1)];
				ntab[p->hash & (nsize - 1)] = p;
			}
		}
		free(st->tab);
		st->tab = ntab;
		st->tab_size = nsize;
	}
	p = sinkd_xcalloc(1, sizeof *p + len + 1);
	p->hash = h;
	p->len = len;
	memcpy(p->name, name, len);
	p->next = st->tab[h & (st->tab_size - 1)];
	st->tab[h & (st->tab_size - 1)] = p;
	st->npaths++;
	return p;
}

/* Caller holds st->mu. */
static void sinkd_state_clear(struct sinkd_state *st)
{
	size_t i;

	for (i = 0; i < st->tab_size; i++) {
		struct sinkd_path *p;

		while ((p = st->tab[i]) != NULL) {
			st->tab[i] = p->next;
			sinkd_script_free(p->script);
			free(p);
		}
	}
	st->npaths = 0;
	sinkd_script_free(st->dflt);
	st->dflt = NULL;
	st->requests = 0;
	st->bytes = 0;
	memset(st->by_status, 0, sizeof st->by_status);
	memset(st->faults, 0, sizeof st->faults);
}

/* ---- latency timer --------------------------------------------------- */

/* One thread resumes suspended connections when their latency expires and
 * flushes the record file every 200 ms; suspending instead of sleeping
 * keeps MHD's worker threads free for other connections. */
struct sinkd_tent {
	int64_t due_ns;
	struct MHD_Connection *conn;
};

struct sinkd_timer {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thr;
	struct sinkd_tent *heap;
	size_t n, cap;
	bool stopping;
	struct sinkd_rec *rec;
};

static void sinkd_heap_push(struct sinkd_timer *t, int64_t due,
			    struct MHD_Connection *c)
{
	size_t i;

	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->heap = sinkd_xrealloc(t->heap, t->cap * sizeof *t->heap);
	}
	i = t->n++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (t->heap[parent].due_ns <= due)
			break;
		t->heap[i] = t->heap[parent];
		i = parent;
	}
	t->heap[i].due_ns = due;
	t->heap[i].conn = c;
}

static struct sinkd_tent sinkd_heap_pop(struct sinkd_timer *t)
{
	struct sinkd_tent top = t->heap[0], last = t->heap[--t->n];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= t->n)
			break;
		if (c + 1 < t->n && t->heap[c + 1].due_ns < t->heap[c].due_ns)
			c++;
		if (last.due_ns <= t->heap[c].due_ns)
			break;
		t->heap[i] = t->heap[c];
		i = c;
	}
	if (t->n > 0)
		t->heap[i] = last;
	return top;
}

static void *sinkd_timer_main(void *arg)
{
	struct sinkd_timer *t = arg;
	int64_t next_flush = sinkd_now_ns(CLOCK_MONOTONIC) + SINKD_FLUSH_NS;
	struct MHD_Connection *batch[64];

	pthread_mutex_lock(&t->mu);
	while (!t->stopping) {
		int64_t now = sinkd_now_ns(CLOCK_MONOTONIC), wake;
		struct timespec ts;
		size_t nb = 0, i;

		while (t->n > 0 && t->heap[0].due_ns <= now && nb < 64)
			batch[nb++] = sinkd_heap_pop(t).conn;
		if (nb > 0) {
			/* Resume outside our lock: MHD takes its own locks. */
			pthread_mutex_unlock(&t->mu);
			for (i = 0; i < nb; i++)
				MHD_resume_connection(batch[i]);
			pthread_mutex_lock(&t->mu);
			continue;
		}
		if (now >= next_flush) {
			pthread_mutex_unlock(&t->mu);
			sinkd_rec_flush(t->rec);
			pthread_mutex_lock(&t->mu);
			next_flush = now + SINKD_FLUSH_NS;
			continue;
		}
		wake = next_flush;
		if (t->n > 0 && t->heap[0].due_ns < wake)
			wake = t->heap[0].due_ns;
		ts.tv_sec = (time_t)(wake / 1000000000LL);
		ts.tv_nsec = (long)(wake % 1000000000LL);
		pthread_cond_timedwait(&t->cv, &t->mu, &ts);
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

/* Suspend conn for delay_ms; a negative delay_ms suspends it until sinkd
 * stops (hang).  Returns false once shutdown has begun: MHD aborts if it
 * is stopped with connections still suspended, so the caller then answers
 * at once instead. */
static bool sinkd_timer_add(struct sinkd_timer *t, struct MHD_Connection *c,
			    long delay_ms)
{
	int64_t due = delay_ms < 0 ? INT64_MAX :
		sinkd_now_ns(CLOCK_MONOTONIC) + (int64_t)delay_ms * 1000000LL;

	pthread_mutex_lock(&t->mu);
	if (t->stopping) {
		pthread_mutex_unlock(&t->mu);
		return false;
	}
	MHD_suspend_connection(c);
	sinkd_heap_push(t, due, c);
	if (t->heap[0].conn == c)
		pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	return true;
}

static int sinkd_timer_start(struct sinkd_timer *t, struct sinkd_rec *rec)
{
	pthread_condattr_t ca;
	int rc;

	memset(t, 0, sizeof *t);
	t->rec = rec;
	pthread_mutex_init(&t->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cv, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&t->thr, NULL, sinkd_timer_main, t);
	return rc;
}

/* Stop the thread and resume every connection still waiting, so that
 * MHD_stop_daemon finds none suspended. */
static void sinkd_timer_stop(struct sinkd_timer *t)
{
	pthread_mutex_lock(&t->mu);
	t->stopping = true;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->thr, NULL);
	while (t->n > 0)
		MHD_resume_connection(sinkd_heap_pop(t).conn);
	free(t->heap);
	t->heap = NULL;
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mu);
}

/* ---- request handling ------------------------------------------------ */

struct sinkd {
	struct sinkd_state st;
	struct sinkd_rec rec;
	struct sinkd_timer timer;
	struct MHD_Response *plain;   /* shared empty answer, no extra headers */
};

struct sinkd_req {
	bool control;
	bool keep_body;
	bool too_large;
	bool decided;
	int status;
	bool close;
	long retry_after;
	enum sinkd_fault fault;
	char *body;
	size_t len, cap;
	size_t total;
	char *reply;            /* a scripted non-2xx body, or NULL */
};

struct sinkd_hdrs {
	const char **kv;   /* key, value pairs */
	size_t n, cap;
};

static enum MHD_Result sinkd_hdr_iter(void *cls, enum MHD_ValueKind kind,
				      const char *key, const char *value)
{
	struct sinkd_hdrs *h = cls;

	(void)kind;
	if (h->n + 2 > h->cap) {
		h->cap = h->cap ? h->cap * 2 : 32;
		h->kv = sinkd_xrealloc(h->kv, h->cap * sizeof *h->kv);
	}
	h->kv[h->n++] = key;
	h->kv[h->n++] = value ? value : "";
	return MHD_YES;
}

/* Repeated headers are joined with ", " (RFC 9110 5.3) so the JSON object
 * never has duplicate keys; the first spelling of the name wins. */
static void sinkd_record_headers(struct sbuf *b, struct MHD_Connection *conn)
{
	struct sinkd_hdrs h = { NULL, 0, 0 };
	struct sbuf val = { NULL, 0, 0 };
	bool first = true;
	size_t i, j;

	MHD_get_connection_values(conn, MHD_HEADER_KIND, sinkd_hdr_iter, &h);
	sinkd_sb_putc(b, '{');
	for (i = 0; i < h.n; i += 2) {
		bool seen = false;

		for (j = 0; j < i && !seen; j += 2)
			seen = strcasecmp(h.kv[j], h.kv[i]) == 0;
		if (seen)
			continue;
		val.len = 0;
		sinkd_sb_puts(&val, h.kv[i + 1]);
		for (j = i + 2; j < h.n; j += 2) {
			if (strcasecmp(h.kv[j], h.kv[i]) == 0) {
				sinkd_sb_put(&val, ", ", 2);
				sinkd_sb_puts(&val, h.kv[j + 1]);
			}
		}
		if (!first)
			sinkd_sb_putc(b, ',');
		first = false;
		sinkd_sb_json_str(b, h.kv[i], strlen(h.kv[i]));
		sinkd_sb_putc(b, ':');
		sinkd_sb_json_str(b, val.p ? val.p : "", val.len);
	}
	sinkd_sb_putc(b, '}');
	free(val.p);
	free(h.kv);
}

static void sinkd_record(struct sinkd *sd, struct MHD_Connection *conn,
			 const char *url, const char *method,
			 const struct sinkd_req *rq)
{
	struct sbuf b = { NULL, 0, 0 };
	int64_t now = sinkd_now_ns(CLOCK_REALTIME);

	sinkd_sb_puts(&b, "{\"ts_ms\":");
	sinkd_sb_putll(&b, (long long)(now / 1000000LL));
	sinkd_sb_puts(&b, ",\"method\":");
	sinkd_sb_json_str(&b, method, strlen(method));
	sinkd_sb_puts(&b, ",\"path\":");
	sinkd_sb_json_str(&b, url, strlen(url));
	sinkd_sb_puts(&b, ",\"headers\":");
	sinkd_record_headers(&b, conn);
	if (rq->too_large) {
		sinkd_sb_puts(&b, ",\"body\":\"\",\"truncated\":true");
	} else if (sinkd_utf8_valid(rq->body, rq->len)) {
		sinkd_sb_puts(&b, ",\"body\":");
		sinkd_sb_json_str(&b, rq->body ? rq->body : "", rq->len);
	} else {
		sinkd_sb_puts(&b, ",\"body_b64\":\"");
		sinkd_sb_base64(&b, (const unsigned char *)rq->body, rq->len);
		sinkd_sb_putc(&b, '"');
	}
	sinkd_sb_puts(&b, ",\"status\":");
	sinkd_sb_putll(&b, rq->status);
	if (rq->fault != SINKD_FAULT_NONE) {
		sinkd_sb_puts(&b, ",\"fault\":\"");
		sinkd_sb_puts(&b, sinkd_fault_names[rq->fault]);
		sinkd_sb_putc(&b, '"');
	}
	sinkd_sb_puts(&b, "}\n");
	sinkd_rec_append(&sd->rec, b.p, b.len);
	free(b.p);
}

/* reject_every: a request whose Idempotency-Key hashes (32-bit FNV-1a) to
 * 0 modulo N fails every time it is sent, like a message a sink refuses
 * for good; tests compute the same hash (harness.sinkd_rejects). */
static bool sinkd_rejects(const struct sinkd_script *s,
			  struct MHD_Connection *conn)
{
	const char *key;
	uint32_t h = 2166136261u;

	if (s->reject_every <= 0)
		return false;
	key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
					  "Idempotency-Key");
	if (key == NULL)
		return false;
	for (; *key != '\0'; key++)
		h = (h ^ (unsigned char)*key) * 16777619u;
	return h % (uint32_t)s->reject_every == 0;
}

/* The body of a scripted failure: the script's text, or with
 * echo_headers the request's headers (a sink that leaks what it was sent
 * into its error, e.g. an Authorization header). NULL: empty. */
static char *sinkd_reply_body(const struct sinkd_script *s,
			      struct MHD_Connection *conn)
{
	struct sbuf b = { NULL, 0, 0 };

	if (s->echo_headers) {
		sinkd_sb_puts(&b, "{\"error\":\"rejected\",\"request_headers\":");
		sinkd_record_headers(&b, conn);
		sinkd_sb_putc(&b, '}');
	} else if (s->body != NULL) {
		sinkd_sb_puts(&b, s->body);
	} else {
		return NULL;
	}
	sinkd_sb_putc(&b, '\0');
	return b.p;
}

/* splitmix64: a few lines, good enough to spread faults, and repeatable
 * from a seed. */
static uint64_t sinkd_rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* Draws this request's chaos outcome into rq.  Returns false when the
 * draw falls outside every percentage (the request is answered as
 * scripted otherwise).  Caller holds st->mu. */
static bool sinkd_chaos(struct sinkd_script *s, struct sinkd_req *rq,
			long *latency)
{
	int r, i, edge = 0;

	if (s->chaos_pct[0] + s->chaos_pct[1] + s->chaos_pct[2] +
	    s->chaos_pct[3] == 0)
		return false;
	r = (int)(sinkd_rng_next(&s->chaos_rng) % 100u);
	for (i = 0; i < SINKD_NFAULTDRAW; i++) {
		edge += s->chaos_pct[i];
		if (r < edge)
			break;
	}
	switch (i) {
	case SINKD_DRAW_503:
		rq->status = 503;
		return true;
	case SINKD_DRAW_429:
		rq->status = 429;
		if (rq->retry_after < 0)
			rq->retry_after = 1;
		return true;
	case SINKD_DRAW_TIMEOUT:
		/* Answered, but only after the client stopped waiting. */
		rq->status = 200;
		rq->fault = SINKD_FAULT_TIMEOUT;
		*latency = s->chaos_timeout_ms;
		return true;
	case SINKD_DRAW_RESET:
		rq->status = 0;
		rq->fault = SINKD_FAULT_RESET;
		return true;
	default:
		return false;
	}
}

/* Pick the answer for a sink request, count it and record it.  Returns the
 * latency to apply (negative: hang).  Counting happens before the answer is sent, so a
 * client that has its response always sees itself in /_sinkd/stats. */
static long sinkd_decide(struct sinkd *sd, struct MHD_Connection *conn,
			 const char *url, const char *method,
			 struct sinkd_req *rq)
{
	struct sinkd_state *st = &sd->st;
	int64_t now = sinkd_now_ns(CLOCK_MONOTONIC);
	struct sinkd_path *p;
	struct sinkd_script *s;
	long latency = 0;

	rq->status = 200;
	rq->close = false;
	rq->retry_after = -1;
	rq->fault = SINKD_FAULT_NONE;

	pthread_mutex_lock(&st->mu);
	p = sinkd_path_get(st, url, strlen(url));
	p->count++;
	s = p->script ? p->script : st->dflt;
	if (rq->too_large) {
		rq->status = 413;   /* not scripted: the script never saw it */
	} else if (s != NULL) {
		rq->close = s->close;
		rq->retry_after = s->retry_after;
		latency = s->latency_ms;
		if (s->fail_until_ns != 0 && now < s->fail_until_ns) {
			rq->status = s->fail_status;
		} else if (sinkd_rejects(s, conn)) {
			rq->status = s->reject_status;
		} else if (s->hang) {
			rq->status = 0;
			rq->fault = SINKD_FAULT_HANG;
			latency = -1;
		} else if (sinkd_chaos(s, rq, &latency)) {
			/* rq holds the drawn outcome */
		} else if (s->next < s->nstatuses) {
			rq->status = s->statuses[s->next++];
		} else {
			rq->status = s->then_status;
		}
		if (rq->status != 0 && (rq->status < 200 || rq->status > 299))
			rq->reply = sinkd_reply_body(s, conn);
	}
	st->requests++;
	st->bytes += rq->total;
	st->by_status[rq->status]++;
	st->faults[rq->fault]++;
	pthread_mutex_unlock(&st->mu);

	if (sd->rec.fd >= 0)
		sinkd_record(sd, conn, url, method, rq);
	return latency;
}

static enum MHD_Result sinkd_answer(struct sinkd *sd,
				    struct MHD_Connection *conn,
				    const struct sinkd_req *rq)
{
	struct MHD_Response *resp;
	bool retry;
	enum MHD_Result ret;
	char ra[24];

	if (rq->fault == SINKD_FAULT_RESET) {
		/* MHD shuts the socket down (a FIN) before it closes it, so
		 * SO_LINGER 0 alone would show the client an orderly EOF
		 * first.  Linux aborts a connected TCP socket with an RST on
		 * connect(AF_UNSPEC); SO_LINGER 0 covers the close as well. */
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
			conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		struct linger lg = { 1, 0 };
		struct sockaddr unspec;

		if (ci != NULL) {
			setsockopt(ci->connect_fd, SOL_SOCKET, SO_LINGER, &lg,
				   sizeof lg);
			memset(&unspec, 0, sizeof unspec);
			unspec.sa_family = AF_UNSPEC;
			(void)connect(ci->connect_fd, &unspec, sizeof unspec);
		}
		return MHD_NO;
	}
	if (rq->status == 0)
		return MHD_NO;   /* MHD drops the connection without a reply */
	retry = rq->retry_after >= 0 && (rq->status < 200 || rq->status > 299);
	if (!rq->close && !retry && rq->reply == NULL)
		return MHD_queue_response(conn, (unsigned int)rq->status, sd->plain);

	if (rq->reply != NULL)
		resp = MHD_create_response_from_buffer(strlen(rq->reply),
						       rq->reply,
						       MHD_RESPMEM_MUST_COPY);
	else
		resp = MHD_create_response_from_buffer(0, (void *)"",
						       MHD_RESPMEM_PERSISTENT);
	if (resp == NULL)
		return MHD_NO;
	if (rq->close)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	if (retry) {
		snprintf(ra, sizeof ra, "%ld", rq->retry_after);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
	}
	ret = MHD_queue_response(conn, (unsigned int)rq->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- control endpoints ----------------------------------------------- */

static enum MHD_Result sinkd_reply_json(struct MHD_Connection *conn,
					unsigned int status,
					const char *json, size_t len)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(len, (void *)json,
					       MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				"application/json");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result sinkd_reply_error(struct MHD_Connection *conn,
					 unsigned int status, const char *msg)
{
	struct sbuf b = { NULL, 0, 0 };
	enum MHD_Result ret;

	sinkd_sb_puts(&b, "{\"ok\":false,\"error\":");
	sinkd_sb_json_str(&b, msg, strlen(msg));
	sinkd_sb_puts(&b, "}");
	ret = sinkd_reply_json(conn, status, b.p, b.len);
	free(b.p);
	return ret;
}

static enum MHD_Result sinkd_reply_ok(struct MHD_Connection *conn)
{
	static const char ok[] = "{\"ok\":true}";

	return sinkd_reply_json(conn, MHD_HTTP_OK, ok, sizeof ok - 1);
}

static bool sinkd_status_ok(json_int_t v)
{
	return v == 0 || (v >= 200 && v < SINKD_NSTATUS);
}

/* Reads an optional integer field; null counts as absent. */
static bool sinkd_opt_int(json_t *obj, const char *key, json_int_t lo,
			  json_int_t hi, json_int_t *out, char *err,
			  size_t errsz)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL || json_is_null(v))
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < lo ||
	    json_integer_value(v) > hi) {
		snprintf(err, errsz, "%s: expected an integer in [%lld, %lld]",
			 key, (long long)lo, (long long)hi);
		return false;
	}
	*out = json_integer_value(v);
	return true;
}

static bool sinkd_opt_status(json_t *obj, const char *key, json_int_t *out,
			     char *err, size_t errsz)
{
	json_int_t v = *out;

	if (!sinkd_opt_int(obj, key, 0, SINKD_NSTATUS - 1, &v, err, errsz))
		return false;
	if (!sinkd_status_ok(v)) {
		snprintf(err, errsz, "%s: status must be 0 or 200..599", key);
		return false;
	}
	*out = v;
	return true;
}

/* Reads the optional "chaos" object: percentages by name, timeout_ms and
 * seed; unknown keys and percentages that add up past 100 are refused. */
static bool sinkd_parse_chaos(json_t *obj, int pct[SINKD_NFAULTDRAW],
			      json_int_t *timeout_ms, json_int_t *seed,
			      char *err, size_t errsz)
{
	const char *key;
	json_t *v;
	int i, sum = 0;

	if (obj == NULL || json_is_null(obj))
		return true;
	if (!json_is_object(obj)) {
		snprintf(err, errsz, "chaos: expected an object");
		return false;
	}
	json_object_foreach(obj, key, v) {
		bool found = strcmp(key, "timeout_ms") == 0 ||
			     strcmp(key, "seed") == 0;

		for (i = 0; i < SINKD_NFAULTDRAW; i++)
			found = found || strcmp(key, sinkd_draw_names[i]) == 0;
		if (!found) {
			snprintf(err, errsz, "chaos: unknown field: %s "
				 "(known: 503, 429, timeout, reset, timeout_ms, "
				 "seed)", key);
			return false;
		}
	}
	for (i = 0; i < SINKD_NFAULTDRAW; i++) {
		json_int_t p = 0;

		v = json_object_get(obj, sinkd_draw_names[i]);
		if (v != NULL && !json_is_null(v)) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 100) {
				snprintf(err, errsz, "chaos.%s: expected a "
					 "percentage, an integer in [0, 100]",
					 sinkd_draw_names[i]);
				return false;
			}
			p = json_integer_value(v);
		}
		pct[i] = (int)p;
		sum += pct[i];
	}
	if (sum > 100) {
		snprintf(err, errsz, "chaos: the percentages add up to %d, "
			 "more than 100", sum);
		return false;
	}
	if (!sinkd_opt_int(obj, "timeout_ms", 1, SINKD_MAX_LATENCY, timeout_ms,
			   err, errsz) ||
	    !sinkd_opt_int(obj, "seed", 0, INT64_MAX, seed, err, errsz))
		return false;
	return true;
}

static enum MHD_Result sinkd_ctl_script(struct sinkd *sd,
					struct MHD_Connection *conn,
					const struct sinkd_req *rq)
{
	static const char *const known[] = {
		"path", "statuses", "then", "latency_ms", "close",
		"retry_after", "fail_for_ms", "fail_status",
		"reject_every", "reject_status", "echo_headers", "body",
		"chaos", "hang",
	};
	struct sinkd_script *s;
	json_error_t jerr;
	json_t *root, *v, *arr;
	const char *key, *path;
	char err[256];
	json_int_t then_status = 200, latency = 0, retry = -1, fail_for = 0;
	json_int_t fail_status = 503, reject_every = 0, reject_status = 400;
	json_int_t chaos_timeout = 30000, chaos_seed = 1;
	int chaos_pct[SINKD_NFAULTDRAW] = { 0 };
	size_t i, k;
	enum MHD_Result ret;

	root = json_loadb(rq->body ? rq->body : "", rq->len, 0, &jerr);
	if (root == NULL) {
		snprintf(err, sizeof err, "invalid JSON: %s", jerr.text);
		return sinkd_reply_error(conn, MHD_HTTP_BAD_REQUEST, err);
	}
	if (!json_is_object(root)) {
		json_decref(root);
		return sinkd_reply_error(conn, MHD_HTTP_BAD_REQUEST,
					 "expected a JSON object");
	}
	/* Reject unknown fields so a typo in a test fails loudly. */
	json_object_foreach(root, key, v) {
		bool found = false;

		for (k = 0; k < sizeof known / sizeof known[0]; k++)
			found = found || strcmp(key, known[k]) == 0;
		if (!found) {
			snprintf(err, sizeof err, "unknown field: %s", key);
			goto bad;
		}
	}
	v = json_object_get(root, "path");
	if (!json_is_string(v) || json_string_length(v) == 0) {
		snprintf(err, sizeof err, "path: expected a non-empty string");
		goto bad;
	}
	path = json_string_value(v);
	if (!sinkd_opt_status(root, "then", &then_status, err, sizeof err) ||
	    !sinkd_opt_status(root, "fail_status", &fail_status, err, sizeof err) ||
	    !sinkd_opt_int(root, "latency_ms", 0, SINKD_MAX_LATENCY, &latency,
			   err, sizeof err) ||
	    !sinkd_opt_int(root, "retry_after", 0, INT32_MAX, &retry, err,
			   sizeof err) ||
	    !sinkd_opt_int(root, "fail_for_ms", 0, INT32_MAX, &fail_for, err,
			   sizeof err) ||
	    !sinkd_opt_int(root, "reject_every", 0, INT32_MAX, &reject_every,
			   err, sizeof err) ||
	    !sinkd_opt_status(root, "reject_status", &reject_status, err,
			      sizeof err))
		goto bad;
	v = json_object_get(root, "echo_headers");
	if (v != NULL && !json_is_null(v) && !json_is_boolean(v)) {
		snprintf(err, sizeof err, "echo_headers: expected a boolean");
		goto bad;
	}
	v = json_object_get(root, "body");
	if (v != NULL && !json_is_null(v) && !json_is_string(v)) {
		snprintf(err, sizeof err, "body: expected a string");
		goto bad;
	}
	v = json_object_get(root, "close");
	if (v != NULL && !json_is_null(v) && !json_is_boolean(v)) {
		snprintf(err, sizeof err, "close: expected a boolean");
		goto bad;
	}
	arr = json_object_get(root, "statuses");
	if (arr != NULL && !json_is_null(arr) && !json_is_array(arr)) {
		snprintf(err, sizeof err, "statuses: expected an array");
		goto bad;
	}

	v = json_object_get(root, "hang");
	if (v != NULL && !json_is_null(v) && !json_is_boolean(v)) {
		snprintf(err, sizeof err, "hang: expected a boolean");
		goto bad;
	}
	if (!sinkd_parse_chaos(json_object_get(root, "chaos"), chaos_pct,
			       &chaos_timeout, &chaos_seed, err, sizeof err))
		goto bad;

	s = sinkd_xcalloc(1, sizeof *s);
	s->nstatuses = json_is_array(arr) ? json_array_size(arr) : 0;
	s->statuses = sinkd_xcalloc(s->nstatuses, sizeof *s->statuses);
	for (i = 0; i < s->nstatuses; i++) {
		json_t *e = json_array_get(arr, i);

		if (!json_is_integer(e) || !sinkd_status_ok(json_integer_value(e))) {
			snprintf(err, sizeof err,
				 "statuses[%zu]: status must be 0 or 200..599", i);
			sinkd_script_free(s);
			goto bad;
		}
		s->statuses[i] = (int)json_integer_value(e);
	}
	s->then_status = (int)then_status;
	s->latency_ms = (long)latency;
	s->close = json_is_true(json_object_get(root, "close"));
	s->retry_after = (long)retry;
	s->fail_status = (int)fail_status;
	s->reject_every = (long)reject_every;
	s->reject_status = (int)reject_status;
	s->echo_headers = json_is_true(json_object_get(root, "echo_headers"));
	s->hang = json_is_true(json_object_get(root, "hang"));
	memcpy(s->chaos_pct, chaos_pct, sizeof s->chaos_pct);
	s->chaos_timeout_ms = (long)chaos_timeout;
	s->chaos_rng = (uint64_t)chaos_seed;
	v = json_object_get(root, "body");
	if (json_is_string(v))
		s->body = strdup(json_string_value(v));
	if (fail_for > 0)
		s->fail_until_ns = sinkd_now_ns(CLOCK_MONOTONIC) +
				   (int64_t)fail_for * 1000000LL;

	pthread_mutex_lock(&sd->st.mu);
	if (strcmp(path, "*") == 0) {
		sinkd_script_free(sd->st.dflt);
		sd->st.dflt = s;
	} else {
		struct sinkd_path *p = sinkd_path_get(&sd->st, path, strlen(path));

		sinkd_script_free(p->script);
		p->script = s;
	}
	pthread_mutex_unlock(&sd->st.mu);
	json_decref(root);
	return sinkd_reply_ok(conn);

bad:
	ret = sinkd_reply_error(conn, MHD_HTTP_BAD_REQUEST, err);
	json_decref(root);
	return ret;
}

static enum MHD_Result sinkd_ctl_stats(struct sinkd *sd,
				       struct MHD_Connection *conn)
{
	struct sinkd_state *st = &sd->st;
	struct sbuf b = { NULL, 0, 0 };
	bool first = true;
	enum MHD_Result ret;
	size_t i;

	pthread_mutex_lock(&st->mu);
	sinkd_sb_puts(&b, "{\"requests\":");
	sinkd_sb_putull(&b, st->requests);
	sinkd_sb_puts(&b, ",\"by_path\":{");
	for (i = 0; i < st->tab_size; i++) {
		const struct sinkd_path *p;

		for (p = st->tab[i]; p != NULL; p = p->next) {
			if (p->count == 0)
				continue;   /* scripted but never requested */
			if (!first)
				sinkd_sb_putc(&b, ',');
			first = false;
			sinkd_sb_json_str(&b, p->name, p->len);
			sinkd_sb_putc(&b, ':');
			sinkd_sb_putull(&b, p->count);
		}
	}
	sinkd_sb_puts(&b, "},\"by_status\":{");
	first = true;
	for (i = 0; i < SINKD_NSTATUS; i++) {
		if (st->by_status[i] == 0)
			continue;
		if (!first)
			sinkd_sb_putc(&b, ',');
		first = false;
		sinkd_sb_putc(&b, '"');
		sinkd_sb_putull(&b, i);
		sinkd_sb_puts(&b, "\":");
		sinkd_sb_putull(&b, st->by_status[i]);
	}
	sinkd_sb_puts(&b, "},\"faults\":{");
	for (i = 1; i < SINKD_NFAULT; i++) {
		if (i > 1)
			sinkd_sb_putc(&b, ',');
		sinkd_sb_putc(&b, '"');
		sinkd_sb_puts(&b, sinkd_fault_names[i]);
		sinkd_sb_puts(&b, "\":");
		sinkd_sb_putull(&b, st->faults[i]);
	}
	sinkd_sb_puts(&b, "},\"bytes\":");
	sinkd_sb_putull(&b, st->bytes);
	sinkd_sb_putc(&b, '}');
	pthread_mutex_unlock(&st->mu);

	ret = sinkd_reply_json(conn, MHD_HTTP_OK, b.p, b.len);
	free(b.p);
	return ret;
}

static enum MHD_Result sinkd_control(struct sinkd *sd,
				     struct MHD_Connection *conn,
				     const char *url, const char *method,
				     const struct sinkd_req *rq)
{
	const char *ep = url + strlen(SINKD_CTL_PREFIX);
	bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;

	if (rq->too_large)
		return sinkd_reply_error(conn, MHD_HTTP_CONTENT_TOO_LARGE,
					 "body too large");
	if (strcmp(ep, "stats") == 0) {
		if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
			return sinkd_reply_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
						 "use GET");
		return sinkd_ctl_stats(sd, conn);
	}
	if (strcmp(ep, "script") != 0 && strcmp(ep, "reset") != 0 &&
	    strcmp(ep, "flush") != 0)
		return sinkd_reply_error(conn, MHD_HTTP_NOT_FOUND,
					 "unknown control endpoint");
	if (!post)
		return sinkd_reply_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
					 "use POST");
	if (strcmp(ep, "script") == 0)
		return sinkd_ctl_script(sd, conn, rq);
	if (strcmp(ep, "reset") == 0) {
		pthread_mutex_lock(&sd->st.mu);
		sinkd_state_clear(&sd->st);
		pthread_mutex_unlock(&sd->st.mu);
		return sinkd_reply_ok(conn);
	}
	sinkd_rec_flush(&sd->rec);
	return sinkd_reply_ok(conn);
}

/* ---- MHD callbacks --------------------------------------------------- */

static enum MHD_Result sinkd_access(void *cls, struct MHD_Connection *conn,
				    const char *url, const char *method,
				    const char *version,
				    const char *upload_data,
				    size_t *upload_data_size, void **con_cls)
{
	struct sinkd *sd = cls;
	struct sinkd_req *rq = *con_cls;
	long latency;

	(void)version;
	if (rq == NULL) {
		/* First call: headers only.  Keep bodies only when someone
		 * will read them, so benchmark mode does no copying. */
		const char *cl;

		rq = sinkd_xcalloc(1, sizeof *rq);
		rq->control = strncmp(url, SINKD_CTL_PREFIX,
				      strlen(SINKD_CTL_PREFIX)) == 0;
		rq->keep_body = rq->control || sd->rec.fd >= 0;
		cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
						 MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (rq->keep_body && cl != NULL) {
			char *end;
			unsigned long long n;

			errno = 0;
			n = strtoull(cl, &end, 10);
			if (errno == 0 && end != cl && *end == '\0' && n > 0 &&
			    n <= SINKD_MAX_BODY) {
				rq->body = sinkd_xrealloc(NULL, (size_t)n);
				rq->cap = (size_t)n;
			}
		}
		*con_cls = rq;
		return MHD_YES;
	}

	if (*upload_data_size != 0) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		rq->total += n;
		if (rq->total > SINKD_MAX_BODY) {
			/* Keep reading so the connection stays usable, but
			 * drop the data: the answer will be 413. */
			rq->too_large = true;
			free(rq->body);
			rq->body = NULL;
			rq->len = rq->cap = 0;
		} else if (rq->keep_body) {
			if (rq->len + n > rq->cap) {
				size_t cap = rq->cap ? rq->cap : 4096;

				while (cap < rq->len + n)
					cap *= 2;
				if (cap > SINKD_MAX_BODY)
					cap = SINKD_MAX_BODY;
				rq->body = sinkd_xrealloc(rq->body, cap);
				rq->cap = cap;
			}
			memcpy(rq->body + rq->len, upload_data, n);
			rq->len += n;
		}
		return MHD_YES;
	}

	if (rq->control)
		return sinkd_control(sd, conn, url, method, rq);
	if (!rq->decided) {
		rq->decided = true;
		latency = sinkd_decide(sd, conn, url, method, rq);
		if (latency != 0 && sinkd_timer_add(&sd->timer, conn, latency))
			return MHD_YES;   /* called again after the resume */
	}
	return sinkd_answer(sd, conn, rq);
}

static void sinkd_completed(void *cls, struct MHD_Connection *conn,
			    void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct sinkd_req *rq = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (rq != NULL) {
		free(rq->body);
		free(rq->reply);
		free(rq);
		*con_cls = NULL;
	}
}

/* MHD logs every connection an access handler refuses; for sinkd that is
 * a scripted status 0, so keep stderr for real errors. */
static void __attribute__((format(printf, 2, 0)))
sinkd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	(void)cls;
	vsnprintf(msg, sizeof msg, fmt, ap);
	if (strstr(msg, "Application reported internal error") != NULL)
		return;
	fprintf(stderr, "sinkd: %s", msg);
}

/* ---- main ------------------------------------------------------------ */

static void sinkd_usage(FILE *f)
{
	fputs("usage: sinkd [--port N] [--bind ADDR] [--record FILE] "
	      "[--port-file FILE] [--threads N]\n", f);
}

/* Write "PORT\n" via a temp file and rename, so readers never see a
 * partial file. */
static bool sinkd_write_port_file(const char *path, unsigned int port)
{
	size_t n = strlen(path) + 32;
	char *tmp = sinkd_xrealloc(NULL, n);
	char line[16];
	int len, fd;
	bool ok;

	snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
	len = snprintf(line, sizeof line, "%u\n", port);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ok = fd >= 0 && len > 0 && sinkd_write_all(fd, line, (size_t)len);
	if (fd >= 0 && close(fd) != 0)
		ok = false;
	if (ok && rename(tmp, path) != 0)
		ok = false;
	if (!ok) {
		perror("sinkd: writing port file");
		unlink(tmp);
	}
	free(tmp);
	return ok;
}

int main(int argc, char **argv)
{
	static struct sinkd sd;
	const char *bind_addr = "127.0.0.1", *record = NULL, *port_file = NULL;
	long port = 0, threads = 2;
	struct sockaddr_in sin4;
	struct sockaddr_in6 sin6;
	struct sockaddr *sa;
	bool v6 = false;
	unsigned int flags;
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *info;
	struct MHD_OptionItem pool[2] = {
		{ MHD_OPTION_END, 0, NULL }, { MHD_OPTION_END, 0, NULL },
	};
	struct rlimit rl;
	sigset_t sigs;
	struct sigaction ign;
	int sig = 0, i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *val = NULL, *eq;
		char name[32];
		size_t nlen;

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			sinkd_usage(stdout);
			return 0;
		}
		eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
		nlen = eq ? (size_t)(eq - a) : strlen(a);
		if (nlen >= sizeof name) {
			fprintf(stderr, "sinkd: unknown option %s\n", a);
			sinkd_usage(stderr);
			return 2;
		}
		memcpy(name, a, nlen);
		name[nlen] = '\0';
		if (eq != NULL) {
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			fprintf(stderr, "sinkd: %s needs a value\n", a);
			return 2;
		}
		if (strcmp(name, "--port") == 0) {
			if (!sinkd_parse_long(val, 0, 65535, &port)) {
				fprintf(stderr, "sinkd: bad --port %s\n", val);
				return 2;
			}
		} else if (strcmp(name, "--threads") == 0) {
			if (!sinkd_parse_long(val, 1, 256, &threads)) {
				fprintf(stderr, "sinkd: bad --threads %s\n", val);
				return 2;
			}
		} else if (strcmp(name, "--bind") == 0) {
			bind_addr = val;
		} else if (strcmp(name, "--record") == 0) {
			record = val;
		} else if (strcmp(name, "--port-file") == 0) {
			port_file = val;
		} else {
			fprintf(stderr, "sinkd: unknown option %s\n", name);
			sinkd_usage(stderr);
			return 2;
		}
	}

	memset(&sin4, 0, sizeof sin4);
	memset(&sin6, 0, sizeof sin6);
	if (inet_pton(AF_INET, bind_addr, &sin4.sin_addr) == 1) {
		sin4.sin_family = AF_INET;
		sin4.sin_port = htons((uint16_t)port);
		sa = (struct sockaddr *)&sin4;
	} else if (inet_pton(AF_INET6, bind_addr, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons((uint16_t)port);
		sa = (struct sockaddr *)&sin6;
		v6 = true;
	} else {
		fprintf(stderr, "sinkd: bad --bind %s (need a numeric address)\n",
			bind_addr);
		return 2;
	}

	/* Many concurrent benchmark connections need many descriptors. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	/* Block the stop signals before any thread exists so that all
	 * threads inherit the mask and only sigwait() below sees them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	memset(&ign, 0, sizeof ign);
	ign.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &ign, NULL);

	sd.rec.fd = -1;
	pthread_mutex_init(&sd.rec.mu, NULL);
	pthread_mutex_init(&sd.rec.wmu, NULL);
	if (record != NULL) {
		sd.rec.fd = open(record, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
				 0644);
		if (sd.rec.fd < 0) {
			fprintf(stderr, "sinkd: cannot open %s: %s\n", record,
				strerror(errno));
			return 1;
		}
	}
	pthread_mutex_init(&sd.st.mu, NULL);
	sd.st.tab_size = 64;
	sd.st.tab = sinkd_xcalloc(sd.st.tab_size, sizeof *sd.st.tab);
	sd.plain = MHD_create_response_from_buffer(0, (void *)"",
						   MHD_RESPMEM_PERSISTENT);
	if (sd.plain == NULL || sinkd_timer_start(&sd.timer, &sd.rec) != 0) {
		fputs("sinkd: initialisation failed\n", stderr);
		return 1;
	}

	/* MHD warns about a pool of 0 or 1, so leave the option out then. */
	if (threads > 1) {
		pool[0].option = MHD_OPTION_THREAD_POOL_SIZE;
		pool[0].value = (intptr_t)threads;
	}
	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
		MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	if (v6)
		flags |= MHD_USE_IPv6;
	d = MHD_start_daemon(flags, 0, NULL, NULL, sinkd_access, &sd,
			     MHD_OPTION_EXTERNAL_LOGGER, sinkd_log, NULL,
			     MHD_OPTION_SOCK_ADDR, sa,
			     MHD_OPTION_ARRAY, pool,
			     MHD_OPTION_CONNECTION_LIMIT, 4096u,
			     MHD_OPTION_CONNECTION_TIMEOUT, 120u,
			     MHD_OPTION_NOTIFY_COMPLETED, sinkd_completed, &sd,
			     MHD_OPTION_END);
	if (d == NULL) {
		fprintf(stderr, "sinkd: cannot listen on %s:%ld\n", bind_addr, port);
		sinkd_timer_stop(&sd.timer);
		return 1;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	if (info == NULL || info->port == 0) {
		fputs("sinkd: cannot determine the bound port\n", stderr);
		sinkd_timer_stop(&sd.timer);
		MHD_stop_daemon(d);
		return 1;
	}
	if (port_file != NULL && !sinkd_write_port_file(port_file, info->port)) {
		sinkd_timer_stop(&sd.timer);
		MHD_stop_daemon(d);
		return 1;
	}
	printf(v6 ? "listening on [%s]:%u\n" : "listening on %s:%u\n", bind_addr,
	       (unsigned int)info->port);
	fflush(stdout);

	while (sigwait(&sigs, &sig) != 0)
		;

	/* Timer first: it resumes every suspended connection, which MHD
	 * requires before it can stop. */
	sinkd_timer_stop(&sd.timer);
	MHD_stop_daemon(d);
	sinkd_rec_flush(&sd.rec);
	if (sd.rec.fd >= 0 && close(sd.rec.fd) != 0)
		perror("sinkd: closing record file");
	MHD_destroy_response(sd.plain);
	pthread_mutex_lock(&sd.st.mu);
	sinkd_state_clear(&sd.st);
	pthread_mutex_unlock(&sd.st.mu);
	free(sd.st.tab);
	free(sd.rec.buf.p);
	free(sd.rec.spare.p);
	return 0;
}
