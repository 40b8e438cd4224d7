/* openai.c - /v1/completions and /v1/chat/completions: parse and validate the
 * request, render the chat template, tokenize, queue one job per choice, and
 * answer with one JSON body or a stream of server-sent events. Text is
 * produced on this side with the streaming detokenizer; stop strings are
 * matched across token boundaries by holding back a possible prefix. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server-impl.h"
#include "util/log.h"
#include "util/util.h"

#define MAX_CHOICES 64
#define MAX_STOPS 16
#define MAX_STOP_LEN 256

typedef struct choice {
    lp_job *job;
    lp_detok *detok;
    int consumed;        /* tokens taken from the job */
    char *text;          /* everything produced (after truncation at a stop string) */
    size_t len, cap;
    size_t emitted;      /* bytes of text already streamed */
    bool finished;       /* text final */
    const char *finish_reason;
    int prompt_index;
    int n_prompt;
    int logprob_emitted; /* tokens whose logprobs were streamed */
} choice;

typedef struct gen {
    lp_server *s;
    bool chat, stream, include_usage, echo;
    int logprobs;        /* -1 none */
    bool chat_logprobs;
    char model[256];
    char id[64];
    long created;
    char *stops[MAX_STOPS];
    int n_stops;
    size_t max_stop;
    choice ch[MAX_CHOICES];
    int n_ch;
    char *echo_text[MAX_CHOICES]; /* prompt text per prompt index (echo) */
    /* streaming */
    char *out;
    size_t out_len, out_pos, out_cap;
    bool role_sent[MAX_CHOICES];    /* chat: the role delta; completions: the echoed prompt */
    bool done_sent;
    struct MHD_Connection *conn;
} gen;

/* ---- small helpers ------------------------------------------------------ */

static bool append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n + 1)
            c *= 2;
        char *b = realloc(*buf, c);
        if (!b)
            return false;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return true;
}

static void gen_free(gen *g) {
    for (int i = 0; i < g->n_ch; i++) {
        if (g->ch[i].job && !g->ch[i].finished)
            lp__job_cancel(g->s, g->ch[i].job);
        lp__job_unref(g->ch[i].job);
        lp_detok_free(g->ch[i].detok);
        free(g->ch[i].text);
    }
    for (int i = 0; i < g->n_stops; i++)
        free(g->stops[i]);
    for (int i = 0; i < MAX_CHOICES; i++)
        free(g->echo_text[i]);
    free(g->out);
    free(g);
}

/* Longest valid UTF-8 prefix length <= n (never cut inside a character). */
static size_t utf8_floor(const char *s, size_t n) {
    size_t i = n;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return 0;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return (n - (i - 1) >= need) ? n : i - 1;
}

/* Pull new tokens of choice c into its text; apply stop strings. Returns
 * true if anything changed. Caller must not hold the job lock. */
static bool choice_progress(gen *g, choice *c) {
    if (c->finished)
        return false;
    lp_job *j = c->job;
    pthread_mutex_lock(&j->mu);
    int n = j->n_tokens;
    bool done = j->done;
    lp_finish_reason fr = j->finish;
    pthread_mutex_unlock(&j->mu);
    bool changed = false;
    size_t scan_from = c->len > g->max_stop ? c->len - g->max_stop : 0;
    for (; c->consumed < n; c->consumed++) {
        char *piece = NULL;
        size_t pl = 0;
        if (lp_detok_push(c->detok, j->tokens[c->consumed], &piece, &pl, NULL) == LP_OK && pl)
            append(&c->text, &c->len, &c->cap, piece, pl);
        free(piece);
        changed = true;
    }
    if (done) {
        char *rest = NULL;
        size_t rl = 0;
        if (lp_detok_flush(c->detok, &rest, &rl, NULL) == LP_OK && rl)
            append(&c->text, &c->len, &c->cap, rest, rl);
        free(rest);
    }
    /* stop strings anywhere in the new text (and across the boundary) */
    for (int i = 0; i < g->n_stops && c->text; i++) {
        char *hit = strstr(c->text + scan_from, g->stops[i]);
        if (hit) {
            c->len = (size_t)(hit - c->text);
            c->text[c->len] = '\0';
            c->finished = true;
            c->finish_reason = "stop";
            lp__job_cancel(g->s, j);
            return true;
        }
    }
    if (done) {
        c->finished = true;
        c->finish_reason = fr == LP_FINISH_STOP ? "stop" : fr == LP_FINISH_LENGTH ? "length"
                           : fr == LP_FINISH_ABORT ? "abort" : "error";
        changed = true;
    }
    return changed;
}

/* Bytes of c's text that are final (not a possible stop-string prefix). */
static size_t choice_ready(const gen *g, const choice *c) {
    if (c->finished || g->n_stops == 0)
        return c->len;
    size_t hold = g->max_stop > 0 ? g->max_stop - 1 : 0;
    size_t r = c->len > hold ? c->len - hold : 0;
    return utf8_floor(c->text, r);
}

static json_t *token_string(lp_server *s, int32_t id) {
    char *t = NULL;
    size_t n = 0;
    if (lp_tokenizer_decode(s->tok, &id, 1, false, &t, &n, NULL) != LP_OK)
        return json_string("");
    json_t *r = json_stringn_nocheck(t, n);
    free(t);
    return r ? r : json_string("");
}

static json_t *bytes_of(const char *s, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer((unsigned char)s[i]));
    return a;
}

/* Logprobs objects for tokens [from, to) of a choice. */
static json_t *logprobs_json(gen *g, choice *c, int from, int to, size_t text_offset0, bool with_prompt) {
    lp_job *j = c->job;
    int k = j->req.logprobs;
    if (g->chat) {
        json_t *content = json_array();
        for (int t = from; t < to; t++) {
            json_t *tok = token_string(g->s, j->tokens[t]);
            const char *ts = json_string_value(tok);
            json_t *top = json_array();
            for (int i = 0; i < k; i++) {
                lp_token_logprob *tp = &j->top[(size_t)t * (size_t)k + (size_t)i];
                json_t *tt = token_string(g->s, tp->id);
                const char *tts = json_string_value(tt);
                json_array_append_new(top, json_pack("{s:o,s:f,s:o}", "token", tt, "logprob", (double)tp->logprob,
                                                     "bytes", bytes_of(tts, strlen(tts))));
            }
            json_array_append_new(content, json_pack("{s:o,s:f,s:o,s:o}", "token", tok, "logprob",
                                                     (double)j->logprob[t], "bytes", bytes_of(ts, strlen(ts)),
                                                     "top_logprobs", top));
        }
        return json_pack("{s:o}", "content", content);
    }
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = text_offset0;
    if (with_prompt && j->prompt_lp) { /* the prompt tokens first, the first without a logprob */
        off = 0;
        for (int t = 0; t < j->n_prompt; t++) {
            json_t *tok = token_string(g->s, j->prompt[t]);
            json_array_append_new(offs, json_integer((json_int_t)off));
            off += strlen(json_string_value(tok));
            json_array_append_new(tokens, tok);
            if (t == 0) {
                json_array_append_new(lps, json_null());
                json_array_append_new(tops, json_null());
                continue;
            }
            json_array_append_new(lps, json_real(j->prompt_lp[t]));
            json_t *top = json_object();
            for (int i = 0; i < k; i++) {
                lp_token_logprob *tp = &j->prompt_top[(size_t)t * (size_t)k + (size_t)i];
                json_t *tt = token_string(g->s, tp->id);
                json_object_set_new(top, json_string_value(tt), json_real(tp->logprob));
                json_decref(tt);
            }
            json_array_append_new(tops, top);
        }
        off = text_offset0;
    }
    for (int t = from; t < to; t++) {
        json_t *tok = token_string(g->s, j->tokens[t]);
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += strlen(json_string_value(tok));
        json_array_append_new(tokens, tok);
        json_array_append_new(lps, json_real(j->logprob[t]));
        json_t *top = json_object();
        for (int i = 0; i < k; i++) {
            lp_token_logprob *tp = &j->top[(size_t)t * (size_t)k + (size_t)i];
            json_t *tt = token_string(g->s, tp->id);
            json_object_set_new(top, json_string_value(tt), json_real(tp->logprob));
            json_decref(tt);
        }
        json_array_append_new(tops, top);
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

static json_t *usage_json(gen *g) {
    long prompt = 0, completion = 0;
    int last_prompt_index = -1;
    for (int i = 0; i < g->n_ch; i++) {
        if (g->ch[i].prompt_index != last_prompt_index)
            prompt += g->ch[i].n_prompt;
        last_prompt_index = g->ch[i].prompt_index;
        pthread_mutex_lock(&g->ch[i].job->mu);
        completion += g->ch[i].job->n_tokens;
        pthread_mutex_unlock(&g->ch[i].job->mu);
    }
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                     (json_int_t)completion, "total_tokens", (json_int_t)(prompt + completion));
}

static void count_metrics(gen *g, bool ok) {
    lp_metrics *m = &g->s->m;
    pthread_mutex_lock(&m->mu);
    if (ok)
        m->requests_ok++;
    else
        m->requests_error++;
    pthread_mutex_unlock(&m->mu);
}

/* An error a job ended with before producing anything (e.g. adapter failed). */
static bool job_error(gen *g, int *status, const char **msg) {
    for (int i = 0; i < g->n_ch; i++) {
        lp_job *j = g->ch[i].job;
        if (j->finish == LP_FINISH_ERROR) {
            *status = j->http_status ? (unsigned)j->http_status : 500;
            *msg = j->error[0] ? j->error : "generation failed";
            return true;
        }
    }
    return false;
}

/* ---- non-streaming ------------------------------------------------------ */

static bool client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd pfd = {.fd = ci->connect_fd, .events = POLLRDHUP};
    if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return true;
    return false;
}

static void wait_progress(gen *g, int ms) {
    /* wait on the first unfinished choice's job for new tokens */
    for (int i = 0; i < g->n_ch; i++) {
        choice *c = &g->ch[i];
        if (c->finished)
            continue;
        lp_job *j = c->job;
        pthread_mutex_lock(&j->mu);
        if (!j->done && j->n_tokens == c->consumed) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long ns = ts.tv_nsec + ms * 1000000L;
            ts.tv_sec += ns / 1000000000L;
            ts.tv_nsec = ns % 1000000000L;
            pthread_cond_timedwait(&j->cv, &j->mu, &ts);
        }
        pthread_mutex_unlock(&j->mu);
        return;
    }
}

static enum MHD_Result respond_whole(gen *g) {
    for (;;) {
        bool all = true;
        for (int i = 0; i < g->n_ch; i++) {
            choice_progress(g, &g->ch[i]);
            all &= g->ch[i].finished;
        }
        if (all)
            break;
        if (client_gone(g->conn)) {
            LP_INFO("%s: client disconnected; generation aborted", g->id);
            for (int i = 0; i < g->n_ch; i++)
                lp__job_cancel(g->s, g->ch[i].job);
            count_metrics(g, false);
            gen_free(g);
            return MHD_NO;
        }
        wait_progress(g, 100);
    }
    int status;
    const char *msg;
    if (job_error(g, &status, &msg)) {
        enum MHD_Result r = lp__send_error(g->conn, (unsigned)status, status == 404 ? "NotFoundError" : "InternalServerError",
                                           status == 404 ? "model" : NULL, "%s", msg);
        count_metrics(g, false);
        gen_free(g);
        return r;
    }
    json_t *choices = json_array();
    for (int i = 0; i < g->n_ch; i++) {
        choice *c = &g->ch[i];
        json_t *lp = json_null();
        if (g->logprobs >= 0)
            lp = logprobs_json(g, c, 0, c->job->n_tokens,
                               g->echo && g->echo_text[c->prompt_index] ? strlen(g->echo_text[c->prompt_index]) : 0,
                               g->echo);
        if (g->chat) {
            json_array_append_new(choices, json_pack("{s:i,s:{s:s,s:s%},s:o,s:s}", "index", i, "message", "role",
                                                     "assistant", "content", c->text ? c->text : "", c->len,
                                                     "logprobs", lp, "finish_reason", c->finish_reason));
        } else {
            char *text = NULL;
            size_t tl = 0, tc = 0;
            if (g->echo && g->echo_text[c->prompt_index])
                append(&text, &tl, &tc, g->echo_text[c->prompt_index], strlen(g->echo_text[c->prompt_index]));
            append(&text, &tl, &tc, c->text ? c->text : "", c->len);
            json_array_append_new(choices, json_pack("{s:i,s:s%,s:o,s:s}", "index", i, "text", text ? text : "", tl,
                                                     "logprobs", lp, "finish_reason", c->finish_reason));
            free(text);
        }
    }
    json_t *body = json_pack("{s:s,s:s,s:I,s:s,s:o,s:o}", "id", g->id, "object",
                             g->chat ? "chat.completion" : "text_completion", "created", (json_int_t)g->created,
                             "model", g->model, "choices", choices, "usage", usage_json(g));
    count_metrics(g, true);
    enum MHD_Result r = lp__send_json(g->conn, MHD_HTTP_OK, body);
    gen_free(g);
    return r;
}

/* ---- streaming ---------------------------------------------------------- */

static void sse(gen *g, json_t *obj) {
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!text)
        return;
    append(&g->out, &g->out_len, &g->out_cap, "data: ", 6);
    append(&g->out, &g->out_len, &g->out_cap, text, strlen(text));
    append(&g->out, &g->out_len, &g->out_cap, "\n\n", 2);
    free(text);
}

static json_t *chunk(gen *g, json_t *choices) {
    return json_pack("{s:s,s:s,s:I,s:s,s:o}", "id", g->id, "object",
                     g->chat ? "chat.completion.chunk" : "text_completion", "created", (json_int_t)g->created,
                     "model", g->model, "choices", choices);
}

/* Produce SSE events for whatever progressed; true when the stream is over. */
static bool stream_fill(gen *g) {
    bool all = true;
    for (int i = 0; i < g->n_ch; i++) {
        choice *c = &g->ch[i];
        bool was_finished = c->finished;
        choice_progress(g, c);
        size_t ready = choice_ready(g, c);
        int ntok = c->consumed;
        bool text_new = ready > c->emitted;
        bool lp_new = g->logprobs >= 0 && ntok > c->logprob_emitted && (c->finished || text_new);
        if (g->echo && !g->role_sent[i]) { /* echo: the prompt text comes first */
            pthread_mutex_lock(&c->job->mu);
            bool lp_ready = !c->job->prompt_lp || c->job->prompt_lp_done >= c->job->n_prompt || c->job->done;
            pthread_mutex_unlock(&c->job->mu);
            if (!lp_ready) { /* its logprobs come with it: wait for the prefill */
                all = false;
                continue;
            }
            const char *et = g->echo_text[c->prompt_index] ? g->echo_text[c->prompt_index] : "";
            json_t *lp = g->logprobs >= 0 ? logprobs_json(g, c, 0, 0, 0, true) : json_null();
            sse(g, chunk(g, json_pack("[{s:i,s:s,s:o,s:n}]", "index", i, "text", et, "logprobs", lp, "finish_reason")));
            g->role_sent[i] = true;
        }
        if (g->chat && !g->role_sent[i]) {
            sse(g, chunk(g, json_pack("[{s:i,s:{s:s,s:s},s:n,s:n}]", "index", i, "delta", "role", "assistant",
                                      "content", "", "logprobs", "finish_reason")));
            g->role_sent[i] = true;
        }
        if (text_new || lp_new) {
            size_t off0 = c->emitted + (g->echo && g->echo_text[c->prompt_index] ? strlen(g->echo_text[c->prompt_index]) : 0);
            json_t *lp = lp_new ? logprobs_json(g, c, c->logprob_emitted, ntok, off0, false) : json_null();
            if (lp_new)
                c->logprob_emitted = ntok;
            json_t *piece = json_stringn_nocheck(c->text + c->emitted, ready - c->emitted);
            json_t *ch = g->chat ? json_pack("[{s:i,s:{s:o},s:o,s:n}]", "index", i, "delta", "content", piece,
                                             "logprobs", lp, "finish_reason")
                                 : json_pack("[{s:i,s:o,s:o,s:n}]", "index", i, "text", piece, "logprobs", lp,
                                             "finish_reason");
            sse(g, chunk(g, ch));
            c->emitted = ready;
        }
        if (c->finished && !was_finished) {
            json_t *ch = g->chat ? json_pack("[{s:i,s:{},s:n,s:s}]", "index", i, "delta", "logprobs",
                                             "finish_reason", c->finish_reason)
                                 : json_pack("[{s:i,s:s,s:n,s:s}]", "index", i, "text", "", "logprobs",
                                             "finish_reason", c->finish_reason);
            sse(g, chunk(g, ch));
        }
        all &= c->finished;
    }
    if (all && !g->done_sent) {
        int status;
        const char *msg;
        if (job_error(g, &status, &msg)) {
            json_t *e = json_pack("{s:{s:s,s:s,s:n,s:i}}", "error", "message", msg, "type",
                                  status == 404 ? "NotFoundError" : "InternalServerError", "param", "code", status);
            sse(g, e);
        }
        if (g->include_usage) {
            json_t *u = chunk(g, json_array());
            json_object_set_new(u, "usage", usage_json(g));
            sse(g, u);
        }
        append(&g->out, &g->out_len, &g->out_cap, "data: [DONE]\n\n", 14);
        g->done_sent = true;
        count_metrics(g, true);
    }
    return all;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    gen *g = cls;
    for (;;) {
        if (g->out_pos < g->out_len) {
            size_t n = LP_MIN(max, g->out_len - g->out_pos);
            memcpy(buf, g->out + g->out_pos, n);
            g->out_pos += n;
            if (g->out_pos == g->out_len)
                g->out_pos = g->out_len = 0;
            return (ssize_t)n;
        }
        if (g->done_sent)
            return MHD_CONTENT_READER_END_OF_STREAM;
        stream_fill(g);
        if (g->out_len == 0)
            wait_progress(g, 100);
    }
}

static void stream_free(void *cls) {
    gen *g = cls;
    if (!g->done_sent)
        LP_INFO("%s: client disconnected mid-stream; generation aborted", g->id);
    gen_free(g);
}

/* ---- request parsing ---------------------------------------------------- */

typedef struct parsed {
    json_t *root;
    const char *model;
    lp_sampling_params sp;
    int max_tokens;
    bool max_tokens_given;
    int n;
    bool stream, include_usage, echo, ignore_eos;
    int logprobs;
    float adapter_scale;
    int32_t stop_ids[64];
    int n_stop_ids;
    lp_logit_bias bias[300];
    int n_bias;
} parsed;

static int get_num(json_t *r, const char *k, double lo, double hi, double *out, const char **bad) {
    json_t *v = json_object_get(r, k);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < lo ||
        json_number_value(v) > hi) {
        *bad = k;
        return -1;
    }
    *out = json_number_value(v);
    return 1;
}

static int get_int(json_t *r, const char *k, long long lo, long long hi, long long *out, const char **bad) {
    json_t *v = json_object_get(r, k);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        *bad = k;
        return -1;
    }
    *out = json_integer_value(v);
    return 1;
}

static int get_bool(json_t *r, const char *k, bool *out, const char **bad) {
    json_t *v = json_object_get(r, k);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v)) {
        *bad = k;
        return -1;
    }
    *out = json_is_true(v);
    return 1;
}

/* Common sampling fields; on error returns the parameter name and message. */
static const char *parse_common(lp_server *s, parsed *p, bool chat, char *msg, size_t msgsz) {
    json_t *r = p->root;
    const char *bad = NULL;
    double d;
    long long x;
    p->sp = lp_sampling_default_params();
    p->sp.temperature = 1.0f;
    p->n = 1;
    p->logprobs = -1;
    p->adapter_scale = 1.0f;
#define RANGE(msgtext)                                                                                                \
    do {                                                                                                               \
        snprintf(msg, msgsz, "%s: " msgtext, bad);                                                                     \
        return bad;                                                                                                    \
    } while (0)
    if (get_num(r, "temperature", 0, 100, &d, &bad) < 0)
        RANGE("must be a number in [0, 100]");
    if (bad == NULL && json_is_number(json_object_get(r, "temperature")))
        p->sp.temperature = (float)json_number_value(json_object_get(r, "temperature"));
    if (get_num(r, "top_p", 1e-9, 1, &d, &bad) < 0)
        RANGE("must be a number in (0, 1]");
    if (json_is_number(json_object_get(r, "top_p")))
        p->sp.top_p = (float)d;
    if (get_int(r, "top_k", -1, 1 << 24, &x, &bad) < 0)
        RANGE("must be an integer >= -1");
    if (json_is_integer(json_object_get(r, "top_k")))
        p->sp.top_k = (int)x;
    if (get_num(r, "min_p", 0, 1, &d, &bad) < 0)
        RANGE("must be a number in [0, 1]");
    if (json_is_number(json_object_get(r, "min_p")))
        p->sp.min_p = (float)d;
    if (get_num(r, "presence_penalty", -2, 2, &d, &bad) < 0)
        RANGE("must be a number in [-2, 2]");
    if (json_is_number(json_object_get(r, "presence_penalty")))
        p->sp.presence_penalty = (float)d;
    if (get_num(r, "frequency_penalty", -2, 2, &d, &bad) < 0)
        RANGE("must be a number in [-2, 2]");
    if (json_is_number(json_object_get(r, "frequency_penalty")))
        p->sp.frequency_penalty = (float)d;
    if (get_num(r, "repetition_penalty", 1e-6, 10, &d, &bad) < 0)
        RANGE("must be a number in (0, 10]");
    if (json_is_number(json_object_get(r, "repetition_penalty")))
        p->sp.repetition_penalty = (float)d;
    if (get_num(r, "lora_scale", -100, 100, &d, &bad) < 0)
        RANGE("must be a number in [-100, 100]");
    if (json_is_number(json_object_get(r, "lora_scale")))
        p->adapter_scale = (float)d;
    if (get_int(r, "seed", INT64_MIN, INT64_MAX, &x, &bad) < 0)
        RANGE("must be an integer");
    if (json_is_integer(json_object_get(r, "seed"))) {
        p->sp.seed = (uint64_t)x;
        p->sp.has_seed = true;
    }
    if (get_int(r, "n", 1, MAX_CHOICES, &x, &bad) < 0)
        RANGE("must be an integer in [1, 64]");
    if (json_is_integer(json_object_get(r, "n")))
        p->n = (int)x;
    const char *mt = json_object_get(r, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if (get_int(r, mt, 1, 1 << 24, &x, &bad) < 0)
        RANGE("must be a positive integer");
    if (json_is_integer(json_object_get(r, mt))) {
        p->max_tokens = (int)x;
        p->max_tokens_given = true;
    }
    if (get_bool(r, "stream", &p->stream, &bad) < 0 || get_bool(r, "echo", &p->echo, &bad) < 0 ||
        get_bool(r, "ignore_eos", &p->ignore_eos, &bad) < 0)
        RANGE("must be a boolean");
    json_t *so = json_object_get(r, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so) || get_bool(so, "include_usage", &p->include_usage, &bad) < 0) {
            bad = "stream_options";
            RANGE("must be an object {\"include_usage\": bool}");
        }
    }
    if (chat) {
        bool want = false;
        if (get_bool(r, "logprobs", &want, &bad) < 0)
            RANGE("must be a boolean");
        if (get_int(r, "top_logprobs", 0, LP_MAX_TOP_LOGPROBS, &x, &bad) < 0)
            RANGE("must be an integer in [0, 20]");
        if (want)
            p->logprobs = json_is_integer(json_object_get(r, "top_logprobs")) ? (int)x : 0;
    } else {
        if (get_int(r, "logprobs", 0, LP_MAX_TOP_LOGPROBS, &x, &bad) < 0)
            RANGE("must be an integer in [0, 20]");
        if (json_is_integer(json_object_get(r, "logprobs")))
            p->logprobs = (int)x;
    }
    json_t *st = json_object_get(r, "stop_token_ids");
    if (st && !json_is_null(st)) {
        size_t i;
        json_t *e;
        if (!json_is_array(st) || json_array_size(st) > 64) {
            bad = "stop_token_ids";
            RANGE("must be a list of at most 64 token ids");
        }
        json_array_foreach(st, i, e) {
            if (!json_is_integer(e) || json_integer_value(e) < 0 ||
                json_integer_value(e) >= lp_model_get_config(s->model)->vocab) {
                bad = "stop_token_ids";
                RANGE("holds an id out of range");
            }
            p->stop_ids[p->n_stop_ids++] = (int32_t)json_integer_value(e);
        }
    }
    json_t *lb = json_object_get(r, "logit_bias");
    if (lb && !json_is_null(lb)) {
        const char *k;
        json_t *v;
        if (!json_is_object(lb) || json_object_size(lb) > 300) {
            bad = "logit_bias";
            RANGE("must be an object of at most 300 token ids");
        }
        json_object_foreach(lb, k, v) {
            char *end = NULL;
            errno = 0;
            long id = strtol(k, &end, 10);
            if (errno || end == k || *end || id < 0 || id >= lp_model_get_config(s->model)->vocab ||
                !json_is_number(v) || json_number_value(v) < -100 || json_number_value(v) > 100) {
                bad = "logit_bias";
                RANGE("keys must be token ids in range, values numbers in [-100, 100]");
            }
            p->bias[p->n_bias++] = (lp_logit_bias){.id = (int32_t)id, .bias = (float)json_number_value(v)};
        }
    }
    p->sp.logit_bias = p->bias;
    p->sp.n_logit_bias = p->n_bias;
#undef RANGE
    return NULL;
}

static const char *parse_stops(gen *g, json_t *r, char *msg, size_t msgsz) {
    json_t *st = json_object_get(r, "stop");
    if (!st || json_is_null(st))
        return NULL;
    json_t *one[1] = {st};
    size_t n = json_is_array(st) ? json_array_size(st) : 1;
    if ((!json_is_string(st) && !json_is_array(st)) || n > MAX_STOPS) {
        snprintf(msg, msgsz, "stop: must be a string or a list of at most %d strings", MAX_STOPS);
        return "stop";
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_is_array(st) ? json_array_get(st, i) : one[0];
        if (!json_is_string(e) || json_string_length(e) == 0 || json_string_length(e) > MAX_STOP_LEN) {
            snprintf(msg, msgsz, "stop: each stop must be a non-empty string of at most %d bytes", MAX_STOP_LEN);
            return "stop";
        }
        g->stops[g->n_stops++] = lp__strdup(json_string_value(e));
        if (json_string_length(e) > g->max_stop)
            g->max_stop = json_string_length(e);
    }
    return NULL;
}

/* Prompts: a string, a list of ids, a list of strings, a list of id lists. */
static const char *parse_prompts(lp_server *s, json_t *pr, int32_t **ids, int *lens, char **texts, int *n, char *msg,
                                 size_t msgsz) {
    *n = 0;
    int vocab = lp_model_get_config(s->model)->vocab;
    json_t *items[MAX_CHOICES];
    int count = 0;
    if (json_is_string(pr) || (json_is_array(pr) && json_array_size(pr) > 0 &&
                               json_is_integer(json_array_get(pr, 0)))) {
        items[count++] = pr;
    } else if (json_is_array(pr) && json_array_size(pr) > 0 && json_array_size(pr) <= MAX_CHOICES) {
        for (size_t i = 0; i < json_array_size(pr); i++)
            items[count++] = json_array_get(pr, i);
    } else {
        snprintf(msg, msgsz, "prompt: must be a non-empty string, a list of token ids, or a list of those (at most %d)",
                 MAX_CHOICES);
        return "prompt";
    }
    for (int i = 0; i < count; i++) {
        json_t *it = items[i];
        if (json_is_string(it)) {
            size_t len = 0;
            lp_error err = {0};
            if (json_string_length(it) == 0) {
                snprintf(msg, msgsz, "prompt: must not be empty");
                return "prompt";
            }
            /* no token spans more than a few dozen bytes: a longer text cannot
             * fit the context, and is refused before spending time on it */
            if (json_string_length(it) > (size_t)s->p.max_model_len * 64) {
                snprintf(msg, msgsz, "prompt: %zu bytes cannot fit the maximum context length of %d tokens",
                         json_string_length(it), s->p.max_model_len);
                return "prompt";
            }
            if (lp_tokenizer_encode(s->tok, json_string_value(it), json_string_length(it), true, &ids[i], &len,
                                    &err)) {
                snprintf(msg, msgsz, "prompt: %.400s", err.msg);
                return "prompt";
            }
            lens[i] = (int)len;
            texts[i] = lp__strdup(json_string_value(it));
        } else if (json_is_array(it) && json_array_size(it) > 0) {
            size_t m = json_array_size(it);
            ids[i] = lp__malloc_array(m, sizeof(int32_t));
            for (size_t k = 0; ids[i] && k < m; k++) {
                json_t *e = json_array_get(it, k);
                if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= vocab) {
                    snprintf(msg, msgsz, "prompt: token ids must be integers in [0, %d)", vocab);
                    *n = i + 1;
                    return "prompt";
                }
                ids[i][k] = (int32_t)json_integer_value(e);
            }
            lens[i] = (int)m;
            char *t = NULL;
            size_t tl = 0;
            if (ids[i] && lp_tokenizer_decode(s->tok, ids[i], m, false, &t, &tl, NULL) == LP_OK)
                texts[i] = t;
        } else {
            snprintf(msg, msgsz, "prompt: must be a non-empty string or list of token ids");
            *n = i;
            return "prompt";
        }
        if (lens[i] == 0) {
            snprintf(msg, msgsz, "prompt: is empty after tokenization");
            *n = i + 1;
            return "prompt";
        }
        *n = i + 1;
    }
    return NULL;
}

static const char *render_chat(lp_server *s, json_t *r, char **out, size_t *out_len, char *msg, size_t msgsz,
                               unsigned *status) {
    json_t *msgs = json_object_get(r, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        snprintf(msg, msgsz, "messages: must be a non-empty list");
        return "messages";
    }
    if (!s->tmpl) {
        snprintf(msg, msgsz, "this model has no chat template; use /v1/completions");
        return "messages";
    }
    json_t *norm = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        if (!json_is_object(m) || !json_is_string(role)) {
            json_decref(norm);
            snprintf(msg, msgsz, "messages[%zu]: must be an object with a string 'role'", i);
            return "messages";
        }
        json_t *copy = json_deep_copy(m);
        if (json_is_array(content)) { /* [{type:text,text}] parts -> one string */
            char *t = NULL;
            size_t tl = 0, tc = 0;
            size_t k;
            json_t *part;
            json_array_foreach(content, k, part) {
                json_t *tx = json_object_get(part, "text");
                if (!json_is_string(tx)) {
                    free(t);
                    json_decref(copy);
                    json_decref(norm);
                    snprintf(msg, msgsz, "messages[%zu].content[%zu]: only text parts are supported", i, k);
                    return "messages";
                }
                append(&t, &tl, &tc, json_string_value(tx), json_string_length(tx));
            }
            json_object_set_new(copy, "content", json_stringn(t ? t : "", tl));
            free(t);
        } else if (content && !json_is_string(content) && !json_is_null(content)) {
            json_decref(copy);
            json_decref(norm);
            snprintf(msg, msgsz, "messages[%zu].content: must be a string or a list of text parts", i);
            return "messages";
        }
        json_array_append_new(norm, copy);
    }
    json_t *vars = json_object();
    json_object_set_new(vars, "messages", norm);
    json_t *tools = json_object_get(r, "tools");
    json_object_set(vars, "tools", tools ? tools : json_null());
    bool agp = true;
    json_t *v = json_object_get(r, "add_generation_prompt");
    if (json_is_boolean(v))
        agp = json_is_true(v);
    json_object_set_new(vars, "add_generation_prompt", json_boolean(agp));
    /* as transformers: a token the tokenizer does not have is left undefined */
    if (s->bos)
        json_object_set_new(vars, "bos_token", json_string(s->bos));
    if (s->eos)
        json_object_set_new(vars, "eos_token", json_string(s->eos));
    json_t *docs = json_object_get(r, "documents");
    json_object_set(vars, "documents", docs ? docs : json_null());
    json_t *kw = json_object_get(r, "chat_template_kwargs");
    if (json_is_object(kw))
        json_object_update_missing(vars, kw);
    lp_error err = {0};
    bool raised = false;
    int rc = lp_chat_template_render(s->tmpl, vars, NULL, out, out_len, &raised, &err);
    json_decref(vars);
    if (rc) {
        snprintf(msg, msgsz, "chat template: %.400s", err.msg);
        *status = 400;
        return "messages";
    }
    return NULL;
}

/* Parse and validate a request, render and tokenize its prompts, and build
 * one (unqueued) job per choice. NULL on a bad request, with the HTTP status,
 * the parameter at fault (or NULL) and the message. */
static gen *build_gen(lp_server *s, bool chat, const char *body, size_t len, unsigned *status_out,
                      const char **bad_out, char *msg, size_t msgsz) {
    json_error_t je;
    parsed p;
    memset(&p, 0, sizeof p);
    const char *bad = NULL;
    unsigned status = 400;
    msg[0] = '\0';
    p.root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!p.root || !json_is_object(p.root)) {
        json_decref(p.root);
        *status_out = 400;
        *bad_out = NULL;
        snprintf(msg, msgsz, "request body must be a JSON object%s%s", p.root ? "" : ": ", p.root ? "" : je.text);
        return NULL;
    }
    gen *g = calloc(1, sizeof *g);
    int32_t *ids[MAX_CHOICES] = {0};
    int lens[MAX_CHOICES] = {0}, n_prompts = 0;
    char *texts[MAX_CHOICES] = {0};
    if (!g) {
        json_decref(p.root);
        *status_out = 500;
        *bad_out = NULL;
        snprintf(msg, msgsz, "out of memory");
        return NULL;
    }
    g->s = s;
    g->chat = chat;
    g->created = (long)time(NULL);
    snprintf(g->id, sizeof g->id, "%s-%08lx%08lx", chat ? "chatcmpl" : "cmpl", (unsigned long)lrand48(),
             (unsigned long)lrand48());
    json_t *model = json_object_get(p.root, "model");
    if (!json_is_string(model)) {
        bad = "model";
        snprintf(msg, msgsz, "model: must be a string naming the base model or an adapter");
        goto fail;
    }
    snprintf(g->model, sizeof g->model, "%s", json_string_value(model));
    bool base = !strcmp(g->model, s->model_id);
    if (!base && !lp_store_has(s->store, g->model)) {
        bad = "model";
        status = 404;
        snprintf(msg, msgsz, "The model `%s` does not exist.", g->model);
        goto fail;
    }
    if ((bad = parse_common(s, &p, chat, msg, msgsz)) || (bad = parse_stops(g, p.root, msg, msgsz)))
        goto fail;
    if (chat) {
        char *prompt = NULL;
        size_t pl = 0;
        if ((bad = render_chat(s, p.root, &prompt, &pl, msg, msgsz, &status)))
            goto fail;
        size_t nid = 0;
        lp_error err = {0};
        if (pl > (size_t)s->p.max_model_len * 64) {
            free(prompt);
            bad = "messages";
            snprintf(msg, msgsz, "messages: the rendered prompt (%zu bytes) cannot fit the maximum context "
                     "length of %d tokens", pl, s->p.max_model_len);
            goto fail;
        }
        /* the template already placed any BOS: no special tokens added */
        if (lp_tokenizer_encode(s->tok, prompt, pl, false, &ids[0], &nid, &err)) {
            free(prompt);
            bad = "messages";
            snprintf(msg, msgsz, "messages: %.400s", err.msg);
            goto fail;
        }
        free(prompt);
        lens[0] = (int)nid;
        n_prompts = 1;
    } else if ((bad = parse_prompts(s, json_object_get(p.root, "prompt"), ids, lens, texts, &n_prompts, msg,
                                    msgsz))) {
        goto fail;
    }
    if (n_prompts * p.n > MAX_CHOICES) {
        bad = "n";
        snprintf(msg, msgsz, "n: prompts x n must be at most %d", MAX_CHOICES);
        goto fail;
    }
    g->stream = p.stream;
    g->include_usage = p.include_usage;
    g->echo = p.echo && !chat;
    g->logprobs = p.logprobs;
    int max_len = s->p.max_model_len;
    for (int i = 0; i < n_prompts; i++) {
        int mt = p.max_tokens_given ? p.max_tokens : chat ? max_len - lens[i] : 16;
        if (lens[i] >= max_len || (int64_t)lens[i] + mt > max_len) {
            bad = p.max_tokens_given ? "max_tokens" : "prompt";
            snprintf(msg, msgsz,
                     "This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the "
                     "prompt, %d for the completion). Please reduce the length of the prompt or max_tokens.",
                     max_len, lens[i] + mt, lens[i], mt);
            goto fail;
        }
        for (int k = 0; k < p.n; k++) {
            lp_job *j = lp__job_new();
            choice *c = &g->ch[g->n_ch++];
            c->job = j;
            c->prompt_index = i;
            c->n_prompt = lens[i];
            c->detok = lp_detok_new(s->tok, true);
            if (!j || !c->detok) {
                status = 500;
                bad = "";
                snprintf(msg, msgsz, "out of memory");
                goto fail;
            }
            j->n_prompt = lens[i];
            j->prompt = lp__malloc_array((size_t)lens[i], sizeof(int32_t));
            if (j->prompt)
                memcpy(j->prompt, ids[i], sizeof(int32_t) * (size_t)lens[i]);
            j->req.max_tokens = mt;
            j->req.sampling = p.sp;
            if (p.sp.has_seed)
                j->req.sampling.seed = p.sp.seed + (uint64_t)k;
            j->req.ignore_eos = p.ignore_eos;
            j->req.logprobs = p.logprobs;
            if (p.echo && p.logprobs >= 0 && !chat) { /* prompt-token logprobs too */
                int kk = p.logprobs > 0 ? p.logprobs : 0;
                j->req.prompt_logprobs = true;
                j->prompt_lp = lp__calloc_array((size_t)lens[i], sizeof(float));
                j->prompt_top = lp__calloc_array((size_t)lens[i] * (size_t)(kk ? kk : 1), sizeof(lp_token_logprob));
                if (!j->prompt_lp || !j->prompt_top) {
                    status = 500;
                    bad = "";
                    snprintf(msg, msgsz, "out of memory");
                    goto fail;
                }
            }
            j->req.adapter_scale = p.adapter_scale;
            if (p.n_bias) {
                j->bias = lp__malloc_array((size_t)p.n_bias, sizeof(lp_logit_bias));
                if (j->bias)
                    memcpy(j->bias, p.bias, sizeof(lp_logit_bias) * (size_t)p.n_bias);
            }
            if (p.n_stop_ids) {
                j->stop_ids = lp__malloc_array((size_t)p.n_stop_ids, sizeof(int32_t));
                if (j->stop_ids)
                    memcpy(j->stop_ids, p.stop_ids, sizeof(int32_t) * (size_t)p.n_stop_ids);
            }
            j->req.n_stop_ids = j->stop_ids ? p.n_stop_ids : 0;
            if (!base)
                snprintf(j->adapter, sizeof j->adapter, "%.127s", g->model);
        }
        g->echo_text[i] = texts[i];
        texts[i] = NULL;
    }
    for (int i = 0; i < MAX_CHOICES; i++) {
        free(ids[i]);
        free(texts[i]);
    }
    json_decref(p.root);
    return g;
fail:
    gen_free(g);
    for (int i = 0; i < MAX_CHOICES; i++) {
        free(ids[i]);
        free(texts[i]);
    }
    json_decref(p.root);
    *status_out = status;
    *bad_out = bad && bad[0] ? bad : NULL;
    return NULL;
}

int lp__request_check(lp_server *s, bool chat, const char *body, size_t len, unsigned *status, char *msg,
                      size_t msgsz) {
    const char *bad = NULL;
    gen *g = build_gen(s, chat, body, len, status, &bad, msg, msgsz);
    if (!g)
        return -1;
    gen_free(g);
    *status = 200;
    return 0;
}

enum MHD_Result lp__handle_generate(lp_server *s, struct MHD_Connection *conn, bool chat, const char *body,
                                    size_t len) {
    char msg[LP_ERROR_MSG_MAX];
    const char *bad = NULL;
    unsigned status = 400;
    enum MHD_Result res;
    gen *g = build_gen(s, chat, body, len, &status, &bad, msg, sizeof msg);
    if (!g) {
        pthread_mutex_lock(&s->m.mu);
        s->m.requests_total++;
        s->m.requests_error++;
        pthread_mutex_unlock(&s->m.mu);
        return lp__send_error(conn, status, status == 404 ? "NotFoundError" : status == 500 ? "InternalServerError"
                                                                                          : "BadRequestError",
                              bad, "%s", msg);
    }
    g->conn = conn;
    int n_prompts = g->n_ch ? g->ch[g->n_ch - 1].prompt_index + 1 : 0;
    pthread_mutex_lock(&s->m.mu);
    s->m.requests_total++;
    for (int i = 0; i < g->n_ch; i++)
        s->m.prompt_tokens += (uint64_t)g->ch[i].n_prompt;
    (void)n_prompts;
    pthread_mutex_unlock(&s->m.mu);
    for (int i = 0; i < g->n_ch; i++) {
        lp_error err = {0};
        int rc = lp__worker_submit(s, g->ch[i].job, &err);
        if (rc) {
            for (int k = 0; k < i; k++)
                lp__job_cancel(s, g->ch[k].job);
            pthread_mutex_lock(&s->m.mu);
            s->m.requests_rejected++;
            pthread_mutex_unlock(&s->m.mu);
            struct MHD_Response *resp;
            json_t *e = json_pack("{s:{s:s,s:s,s:n,s:i}}", "error", "message", err.msg, "type",
                                  rc == LP_ERR_LIMIT ? "RateLimitError" : "ServiceUnavailableError", "param", "code",
                                  rc == LP_ERR_LIMIT ? 429 : 503);
            char *text = json_dumps(e, JSON_COMPACT);
            json_decref(e);
            resp = MHD_create_response_from_buffer(text ? strlen(text) : 0, text, MHD_RESPMEM_MUST_FREE);
            MHD_add_response_header(resp, "Content-Type", "application/json");
            MHD_add_response_header(resp, "Retry-After", "1");
            res = MHD_queue_response(conn, rc == LP_ERR_LIMIT ? 429 : 503, resp);
            MHD_destroy_response(resp);
            gen_free(g);
            return res;
        }
    }
    if (!g->stream)
        return respond_whole(g);
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, g, stream_free);
    if (!resp) {
        gen_free(g);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    res = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return res;
}
