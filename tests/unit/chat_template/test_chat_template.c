/* test_chat_template.c - the chat template interpreter against the real
 * templates of tests/data/chat-templates (rendered by transformers), plus
 * the tricky Jinja2 semantics, limits and hostile inputs one by one. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loraplex/chat_template.h"
#include "testlib.h"

/* 2026-11-22 12:00:00 UTC: strftime_now("%d %b %Y") -> "22 Nov 2026". */
#define FIXED_TIME 1795348800

static lp_template_limits fixed_limits(void) {
    lp_template_limits l = lp_template_default_limits();
    l.fixed_time = FIXED_TIME;
    return l;
}

/* ---- the real templates ---- */

static void test_fixture(const char *data, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/chat-templates/%s.json", data, name);
    json_error_t je;
    json_t *f = json_load_file(path, 0, &je);
    CHECKF(f != NULL, "%s: %s", path, je.text);
    if (!f)
        return;
    const char *src = json_string_value(json_object_get(f, "chat_template"));
    CHECKF(src != NULL, "%s: no chat_template", path);
    lp_chat_template *t = NULL;
    lp_error err = {0};
    int rc = src ? lp_chat_template_compile(src, strlen(src), &t, &err) : LP_ERR_INVALID;
    CHECKF(rc == LP_OK, "%s: compile: %s", name, err.msg);
    json_t *cases = json_object_get(f, "cases");
    size_t ncases = json_array_size(cases), pass = 0;
    lp_template_limits lim = fixed_limits();
    for (size_t i = 0; t && i < ncases; i++) {
        json_t *cs = json_array_get(cases, i);
        json_t *vars = json_object();
        json_object_set(vars, "messages", json_object_get(cs, "messages"));
        json_t *tools = json_object_get(cs, "tools");
        /* transformers always passes tools and documents (None if absent) */
        json_object_set(vars, "tools", tools ? tools : json_null());
        json_object_set(vars, "documents", json_null());
        json_object_set(vars, "add_generation_prompt",
                        json_object_get(cs, "add_generation_prompt"));
        static const char *const toks[] = {"bos_token", "eos_token", "unk_token",
                                           "pad_token"};
        for (size_t k = 0; k < 4; k++) {
            json_t *v = json_object_get(f, toks[k]);
            if (json_is_string(v)) /* special_tokens_map omits unset tokens */
                json_object_set(vars, toks[k], v);
        }
        json_t *extra = json_object_get(cs, "extra");
        if (json_is_object(extra))
            json_object_update(vars, extra);
        char *out = NULL;
        size_t out_len = 0;
        bool raised = false;
        rc = lp_chat_template_render(t, vars, &lim, &out, &out_len, &raised, &err);
        const char *want = json_string_value(json_object_get(cs, "rendered"));
        const char *want_err = json_string_value(json_object_get(cs, "error"));
        bool ok;
        if (want_err) {
            ok = rc == LP_ERR_INVALID && raised && strcmp(err.msg, want_err) == 0;
            CHECKF(ok, "%s case %zu: want error '%s', got rc=%d raised=%d msg='%s'",
                   name, i, want_err, rc, raised, rc ? err.msg : "");
        } else {
            ok = rc == LP_OK && want && out_len == strlen(want) &&
                 memcmp(out, want, out_len) == 0;
            CHECKF(ok, "%s case %zu: rc=%d %s\n--- want\n%s\n--- got\n%.*s\n---", name,
                   i, rc, rc ? err.msg : "", want ? want : "(null)",
                   (int)(out ? out_len : 0), out ? out : "");
        }
        pass += ok;
        free(out);
        json_decref(vars);
    }
    printf("chat template %-12s %zu/%zu cases pass\n", name, pass, ncases);
    lp_chat_template_free(t);
    json_decref(f);
}

/* ---- helpers ---- */

/* Render src with vars (JSON text or NULL) and compare with want. */
static void expect_ex(int line, const char *src, const char *vars_json,
                      const char *want, size_t want_len) {
    lp_chat_template *t = NULL;
    lp_error err = {0};
    int rc = lp_chat_template_compile(src, strlen(src), &t, &err);
    if (rc != LP_OK) {
        CHECKF(0, "line %d: compile '%s': %s", line, src, err.msg);
        return;
    }
    json_t *vars = vars_json ? json_loads(vars_json, 0, NULL) : NULL;
    if (vars_json && !vars)
        CHECKF(0, "line %d: bad vars JSON", line);
    lp_template_limits lim = fixed_limits();
    char *out = NULL;
    size_t n = 0;
    rc = lp_chat_template_render(t, vars, &lim, &out, &n, NULL, &err);
    CHECKF(rc == LP_OK && n == want_len && memcmp(out, want, n) == 0,
           "line %d: '%s'\n  want '%s'\n  got  '%.*s' (rc=%d %s)", line, src, want,
           (int)(out ? n : 0), out ? out : "", rc, rc ? err.msg : "");
    free(out);
    json_decref(vars);
    lp_chat_template_free(t);
}
#define EXPECT(src, vars, want) expect_ex(__LINE__, src, vars, want, strlen(want))

/* Expect compile or render to fail with code; msg_part must occur in the
 * message (NULL: anything). */
static void expect_fail_ex(int line, const char *src, size_t len,
                           const char *vars_json, int code, const char *msg_part,
                           const lp_template_limits *lim_in) {
    lp_chat_template *t = NULL;
    lp_error err = {0};
    int rc = lp_chat_template_compile(src, len, &t, &err);
    if (rc == LP_OK) {
        json_t *vars = vars_json ? json_loads(vars_json, 0, NULL) : NULL;
        lp_template_limits lim = lim_in ? *lim_in : fixed_limits();
        char *out = NULL;
        size_t n = 0;
        rc = lp_chat_template_render(t, vars, &lim, &out, &n, NULL, &err);
        CHECKF(out == NULL || rc == LP_OK, "line %d: out set on failure", line);
        free(out);
        json_decref(vars);
        lp_chat_template_free(t);
    } else {
        CHECKF(t == NULL, "line %d: template set on failure", line);
    }
    CHECKF(rc == code && (!msg_part || strstr(err.msg, msg_part)),
           "line %d: want %s containing '%s', got %s: '%s'", line,
           lp_status_name(code), msg_part ? msg_part : "", lp_status_name(rc),
           err.msg);
}
#define EXPECT_FAIL(src, vars, code, part)                                     \
    expect_fail_ex(__LINE__, src, strlen(src), vars, code, part, NULL)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- whitespace control ---- */

static void test_whitespace(void) {
    /* trim_blocks: the newline after a block tag goes */
    EXPECT("{% if true %}\nyes\n{% endif %}\nend", NULL, "yes\nend");
    /* lstrip_blocks: spaces before a block tag at line start go */
    EXPECT("a\n    {% if true %}\n    b\n    {% endif %}\nc", NULL, "a\n    b\nc");
    /* but not before {{ }} */
    EXPECT("a\n    {{ 'x' }}\n", NULL, "a\n    x");
    /* nor when text precedes the tag on its line */
    EXPECT("a  {% if true %}b{% endif %}", NULL, "a  b");
    /* - strips all whitespace, newlines included, on its side */
    EXPECT("a  \n\n  {%- if true -%}  \n\n b {%- endif %}", NULL, "ab");
    EXPECT("x {{- 'y' -}} \n z", NULL, "xyz");
    /* + disables lstrip_blocks / trim_blocks for that tag */
    EXPECT("a\n  {%+ if true %}b{% endif %}", NULL, "a\n  b");
    EXPECT("{% if true +%}\nb{% endif %}", NULL, "\nb");
    /* comments trim like blocks */
    EXPECT("a {# c #}\nb\n  {# d #}\nc", NULL, "a b\nc");
    EXPECT("a {#- c -#} b", NULL, "ab");
    /* one trailing newline of the source is dropped; \r\n normalized */
    EXPECT("x\n", NULL, "x");
    EXPECT("x\n\n", NULL, "x\n");
    EXPECT("a\r\nb\rc", NULL, "a\nb\nc");
    /* lstrip after a trimmed block: the line starts after the eaten \n */
    EXPECT("{% for i in [1,2] %}\n  {% if i %}\n{{ i }}\n  {% endif %}\n{% endfor %}", NULL,
           "1\n2\n");
    /* raw blocks */
    EXPECT("{% raw %}{{ not evaluated }}{% endraw %}", NULL, "{{ not evaluated }}");
    EXPECT("  {%- raw -%}  x  {%- endraw -%}  ", NULL, "x");
    /* Unicode whitespace counts, as Python's \s does */
    EXPECT("a\xe3\x80\x80{{- 'b' }}", NULL, "ab");
    /* block end after a trailing newline of the tag */
    EXPECT("{% set x = 1\n%}\n{{ x }}", NULL, "1");
}

/* ---- loops and scoping ---- */

static void test_loops(void) {
    EXPECT("{% for x in ['a','b','c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
           "{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}",
           NULL, "1032TrueFalse3|2121FalseFalse3|3210FalseTrue3|");
    EXPECT("{% for x in [1,2,3] %}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %}", NULL,
           "-2;1-3;2-;");
    EXPECT("{% for x in [] %}{{ x }}{% else %}empty{% endfor %}", NULL, "empty");
    EXPECT("{% for i in [1,2,3,4] if i % 2 == 0 %}{{ i }}/{{ loop.length }}{{ loop.last }} "
           "{% endfor %}", NULL, "2/2False 4/2True ");
    EXPECT("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", "{\"d\":{\"b\":1,\"a\":2}}",
           "b=1;a=2;");
    EXPECT("{% for k in d %}{{ k }}{% endfor %}", "{\"d\":{\"x\":1,\"y\":2}}", "xy");
    EXPECT("{% for c in 'h\xc3\xa9!' %}[{{ c }}]{% endfor %}", NULL, "[h][\xc3\xa9][!]");
    EXPECT("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}"
           "{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", NULL, "0134");
    EXPECT("{% for a in [1,2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }} "
           "{% endfor %}{{ loop.index }}|{% endfor %}", NULL, "1x1 1y2 1|2x1 2y2 2|");
    EXPECT("{% for x in undefined_thing %}{{ x }}{% else %}none{% endfor %}", NULL, "none");
    EXPECT("{% for i in range(3) %}{{ loop.cycle('a','b') }}{% endfor %}", NULL, "aba");
    EXPECT("{% for i in [1,1,2] %}{{ loop.changed(i) }}{% endfor %}", NULL, "TrueFalseTrue");
    /* a fresh scope per iteration: sets do not survive it (Jinja2) */
    EXPECT("{% set x = 0 %}{% for i in range(3) %}{{ x }}{% set x = x + 1 %}{{ x }}"
           "{% endfor %}{{ x }}", NULL, "0101010");
    EXPECT("{% for i in range(3) %}{% if i > 0 %}{{ y }}{% endif %}{% set y = i %}"
           "{% endfor %}[{{ y }}]", NULL, "[]");
    /* if blocks do not scope */
    EXPECT("{% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }}", NULL, "2");
    /* namespace carries state out of loops */
    EXPECT("{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}"
           "{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}", NULL, "6 0123");
    EXPECT("{% set ns = namespace(found=false) %}{% for m in ms %}{% if m == 2 %}"
           "{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }}",
           "{\"ms\":[1,2,3]}", "True");
    EXPECT("{% set ns = namespace({'a': 1}) %}{{ ns.a }}{{ ns['a'] }}", NULL, "11");
    /* tuple unpacking, with */
    EXPECT("{% set a, b = 1, 2 %}{{ b }}{{ a }}", NULL, "21");
    EXPECT("{% for a, (b, c) in [(1, (2, 3))] %}{{ a }}{{ b }}{{ c }}{% endfor %}", NULL, "123");
    EXPECT("{% with x = 5, y = 2 %}{{ x * y }}{% endwith %}[{{ x }}]", NULL, "10[]");
    /* block set and filter blocks */
    EXPECT("{% set s %}  A{{ 1 + 1 }}  {% endset %}[{{ s }}]", NULL, "[  A2  ]");
    EXPECT("{% set s | trim | upper %}  ab  {% endset %}[{{ s }}]", NULL, "[AB]");
    EXPECT("{% filter upper %}abc{{ 'd' }}{% endfilter %}", NULL, "ABCD");
    /* macros: defaults, keywords, template-level variables at call time */
    EXPECT("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
           "{{ greet('a') }} {{ greet('b', punct='?') }} {{ greet(name='c') }}", NULL,
           "Hi a! Hi b? Hi c!");
    EXPECT("{% set x = 1 %}{% macro m() %}[{{ x }}]{% endmacro %}{% set x = 3 %}{{ m() }}"
           "{% for i in [1] %}{% set x = 9 %}{{ m() }}{% endfor %}", NULL, "[3][3]");
    EXPECT("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
           "{{ f(3) }}", NULL, "321");
    EXPECT("{% generation %}gen{% endgeneration %}", NULL, "gen");
    /* Jinja's for-else: runs unless an iteration reached the end of the body */
    EXPECT("{% for i in [1, 2] %}x{% else %}E{% endfor %}|"
           "{% for i in [1, 2] %}{% continue %}{% else %}E{% endfor %}|"
           "{% for i in [1, 2] %}{% if i == 2 %}{% break %}{% endif %}{% else %}E{% endfor %}|"
           "{% for i in [1, 2] %}{% break %}{% else %}E{% endfor %}",
           NULL, "xx|E||E");
    /* block set and with bodies are scopes; macros close over theirs */
    EXPECT("{% set blk %}{% set b = 1 %}{{ b }}{% endset %}[{{ blk }}][{{ b }}]"
           "{% with a = 5 %}{% macro m() %}{{ a }}{% endmacro %}{{ m() }}{% endwith %}"
           "{% for i in [1, 2] %}{% macro n() %}{{ i }}{% endmacro %}{{ n() }}{% endfor %}",
           NULL, "[1][]512");
}

/* ---- expressions ---- */

static void test_expressions(void) {
    EXPECT("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} "
           "{{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 2 ** -1 }}", NULL,
           "7 9 3 -4 2 -2 1024 64 4 0.5");
    EXPECT("{{ 10 / 2 }} {{ 1 / 3 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1.5e-5 }} {{ 1e22 }} "
           "{{ 123456789012345678.0 }} {{ 2.5 }} {{ -0.0 }} {{ 1_000 }} {{ 0x1f }} {{ 7.5 // 2 }}",
           NULL,
           "5.0 0.3333333333333333 0.30000000000000004 1e+16 1.5e-05 1e+22 "
           "1.2345678901234568e+17 2.5 -0.0 1000 31 3.0");
    EXPECT("{{ 'a' ~ 1 ~ none ~ true ~ [1] ~ undefined_x }}", NULL, "a1NoneTrue[1]");
    EXPECT("{{ 'ab' * 3 }}{{ [1] * 2 }}{{ 'x' + 'y' }}{{ [1] + [2] }}", NULL,
           "ababab[1, 1]xy[1, 2]");
    EXPECT("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ [1,2] < [1,3] }} "
           "{{ 'b' >= 'a' }} {{ true == 1 }}", NULL, "True False True True True True True");
    EXPECT("{{ 'b' in 'abc' }} {{ 2 in [1,2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} "
           "{{ 5 in range(10) }} {{ 'x' in undefined_y }}", NULL,
           "True True True True True False");
    EXPECT("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' and 1 }} {{ not [] }} {{ none or [] }}", NULL,
           "x y  True []");
    EXPECT("{{ 'y' if 1 else 'n' }}{{ 'y' if 0 else 'n' }}[{{ 'y' if 0 }}]", NULL, "yn[]");
    EXPECT("{{ [1, 'a', none, true, 1.5, {'k': [2]}, (1,), ()] }}", NULL,
           "[1, 'a', None, True, 1.5, {'k': [2]}, (1,), ()]");
    EXPECT("{{ (1, 2) }} {{ {} }} {{ [undefined_q] }} {{ range(3) }} {{ range(1, 9, 2) }}", NULL,
           "(1, 2) {} [Undefined] range(0, 3) range(1, 9, 2)");
    EXPECT("{{ [\"it's\", 'a\"b', 'a\\'b\"c', '\\n\\t\\\\', '\\x00\\u00a0\\u200b\xc3\xa9'] }}",
           NULL,
           "[\"it's\", 'a\"b', 'a\\'b\"c', '\\n\\t\\\\', '\\x00\\xa0\\u200b\xc3\xa9']");
    EXPECT("{{ 'a' 'b' \"c\" }}{{ '\\u00e9\\x41\\101\\q' }}", NULL, "abc\xc3\xa9" "AA\\q");
    EXPECT("{{ x.y }}|{{ x['y'] }}|{{ x.z }}|{{ x.items is callable }}", "{\"x\":{\"y\":1}}",
           "1|1||True");
    EXPECT("{{ x.items()|list }}|{{ x['items'] }}", "{\"x\":{\"items\":5}}", "[('items', 5)]|5");
    EXPECT("{{ l.0 }}{{ l[-1] }}{{ l[9] }}{{ s[1] }}{{ s[-1] }}", "{\"l\":[1,2],\"s\":\"h\xc3\xa9y\"}",
           "12\xc3\xa9y");
    EXPECT("{{ none.x }}|{{ [].append }}|{{ d.get('a') }}{{ d.get('b', 7) }}{{ d.get('c') }}",
           "{\"d\":{\"a\":1}}", "||17None");
    EXPECT("{{ -x }}{{ +x }}{{ -(1.5) }}", "{\"x\":3}", "-33-1.5");
    EXPECT("{{ 'abc' is string }}{{ 1 is number }}{{ 1 is integer }}{{ 1.0 is float }}"
           "{{ true is boolean }}{{ true is number }}{{ none is none }}{{ x is defined }}"
           "{{ x is undefined }}{{ {} is mapping }}{{ 'a' is iterable }}{{ [] is sequence }}"
           "{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(2) }}"
           "{{ false is false }}{{ 0 is false }}{{ true is true }}{{ 'A' is upper }}"
           "{{ 'a' is lower }}{{ 1 is eq 1 }}{{ 2 is gt 1 }}{{ 2 is in [2] }}"
           "{{ none is sameas none }}{{ x is not defined }}",
           NULL,
           "TrueTrueTrueTrueTrueTrueTrueFalseTrueTrueTrueTrueTrueTrueTrueFalse"
           "TrueFalseTrueTrueTrueTrueTrueTrueTrueTrue");
    EXPECT("{{ dict(a=1, b=[2]) }} {{ dict({'x': 1}, y=2) }}", NULL,
           "{'a': 1, 'b': [2]} {'x': 1, 'y': 2}");
    EXPECT("{{ strftime_now('%d %b %Y') }}", NULL, "22 Nov 2026");
    EXPECT("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} "
           "{{ 'a b c'.rsplit(' ', 1) }} {{ '  a b  c '.split(none, 1) }}", NULL,
           "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a b', 'c'] ['a', 'b  c ']");
    EXPECT("[{{ '  x \\n'.strip() }}][{{ 'xxaxx'.strip('x') }}][{{ '  x'.lstrip() }}]"
           "[{{ 'x\\n\\n'.rstrip('\\n') }}]{{ 'abc'.startswith('ab') }}"
           "{{ 'abc'.endswith(('x', 'c')) }}{{ 'aXb'.upper() }}{{ 'aXb'.lower() }}"
           "{{ 'hello world'.title() }}{{ 'they\\'re'.title() }}{{ 'a-b'.replace('-', '+') }}"
           "{{ 'abcb'.find('b') }}{{ 'abcb'.rfind('b') }}{{ 'abcb'.count('b') }}"
           "{{ '-'.join(['a', 'b']) }}{{ 'a\\nb'.splitlines() }}{{ 'ab'.removeprefix('a') }}"
           "{{ '{} and {x}'.format(1, x=2) }}{{ 'a=b=c'.partition('=') }}",
           NULL,
           "[x][a][x][x]TrueTrueAXBaxbHello WorldThey'Rea+b132a-b['a', 'b']b1 and 2"
           "('a', '=', 'b=c')");
    EXPECT("{{ '日本語'|length }}{{ '日本語'[1] }}{{ '日本語'.find('語') }}", NULL,
           "3\xe6\x9c\xac" "2");
    /* printf-style formatting */
    EXPECT("{{ '%s=%d (%.2f) %r %5s|%-4s|%03d %%' % ('a', 7, 2.5, 'q', 'x', 'y', 5) }}"
           "{{ '%(k)s' % {'k': 1} }}{{ 'x' % () }}",
           NULL, "a=7 (2.50) 'q'     x|y   |005 %1x");
    EXPECT_FAIL("{{ '%s %s' % 1 }}", NULL, LP_ERR_INVALID, "not enough arguments");
    EXPECT_FAIL("{{ 'x' % 1 }}", NULL, LP_ERR_INVALID, "not all arguments converted");
    /* Python's full case mappings */
    EXPECT("{{ 'straße'.upper() }} {{ 'ﬁne'|upper }} {{ 'ΟΔΟΣ ΣΑ'.lower() }} {{ 'ß'.title() }}",
           NULL, "STRASSE FINE οδος σα Ss");
    /* list/range methods */
    EXPECT("{{ [1, 2, 2].count(2) }}{{ [1, 2].index(2) }}{{ range(5).count(3) }}", NULL, "211");
}

/* ---- slicing ---- */

static void test_slicing(void) {
    EXPECT("{{ l[1:3] }} {{ l[:2] }} {{ l[2:] }} {{ l[::-1] }} {{ l[-2:] }} {{ l[::2] }} "
           "{{ l[1::-1] }} {{ l[-100:100] }} {{ l[3:1] }} {{ l[:-1] }} {{ l[5:0:-2] }}",
           "{\"l\":[0,1,2,3,4]}",
           "[1, 2] [0, 1] [2, 3, 4] [4, 3, 2, 1, 0] [3, 4] [0, 2, 4] [1, 0] [0, 1, 2, 3, 4] "
           "[] [0, 1, 2, 3] [4, 2]");
    EXPECT("{{ 'h\xc3\xa9llo'[1:3] }}|{{ 'h\xc3\xa9llo'[::-1] }}|{{ 'abc'[::2] }}|"
           "{{ (1, 2, 3)[1:] }}|{{ range(5)[1:3] }}|{{ range(10)[::-1] }}|{{ range(10)[8:2:-3]|list }}",
           NULL, "\xc3\xa9l|oll\xc3\xa9h|ac|(2, 3)|range(1, 3)|range(9, -1, -1)|[8, 5]");
    EXPECT("{{ messages[1:]|length }}", "{\"messages\":[1,2,3]}", "2");
    EXPECT_FAIL("{{ [1][::0] }}", NULL, LP_ERR_INVALID, "slice step cannot be zero");
}

/* ---- filters and tojson ---- */

static void test_filters(void) {
    EXPECT("{{ x|tojson }}",
           "{\"x\":{\"a\":[1,2.5,\"\xc3\xa9\\n\\u2028\\\"\\\\\\u0001\",null,true],\"b\":{},"
           "\"c\":[],\"d\":1e100,\"e\":3.0}}",
           "{\"a\": [1, 2.5, \"\xc3\xa9\\n\xe2\x80\xa8\\\"\\\\\\u0001\", null, true], \"b\": {}, "
           "\"c\": [], \"d\": 1e+100, \"e\": 3.0}");
    EXPECT("{{ x|tojson(indent=2) }}", "{\"x\":{\"a\":[1,2.5,{\"z\":[]}],\"b\":{}}}",
           "{\n  \"a\": [\n    1,\n    2.5,\n    {\n      \"z\": []\n    }\n  ],\n  \"b\": {}\n}");
    EXPECT("{{ x|tojson(separators=(',', ':'), sort_keys=true) }}",
           "{\"x\":{\"b\":[1,2.5],\"a\":{}}}", "{\"a\":{},\"b\":[1,2.5]}");
    EXPECT("{{ 'é😀'|tojson(ensure_ascii=true) }}{{ (1, 'a')|tojson }}{{ {'k': none}|tojson }}"
           "{{ x|tojson(indent='\\t') }}",
           "{\"x\":[1]}", "\"\\u00e9\\ud83d\\ude00\"[1, \"a\"]{\"k\": null}[\n\t1\n]");
    EXPECT("{{ {1: 'a', true: 'b'}|tojson }}", NULL, "{\"1\": \"b\"}");
    EXPECT("[{{ '  a b \\n'|trim }}][{{ 'xxaxx'|trim('x') }}]{{ 'abc'|upper }}{{ 'ABC'|lower }}"
           "{{ 'hello-world foo(bar'|title }}{{ 'aBC dEF'|capitalize }}"
           "{{ 'a-b-c'|replace('-', '+') }}{{ 'aaa'|replace('a', 'b', 2) }}",
           NULL, "[a b][a]ABCabcHello-World Foo(BarAbc defa+b+cbba");
    EXPECT("{{ [1,2,3]|length }}{{ 'abc'|count }}{{ {'a':1}|length }}{{ x|length }}"
           "{{ [3,1,2]|first }}{{ [3,1,2]|last }}{{ 'abc'|first }}{{ [1,2]|join(',') }}"
           "{{ ['a','b']|join }}{{ 'ab'|list }}{{ {'a':1}|list }}",
           NULL, "331032a1,2ab['a', 'b']['a']");
    EXPECT("{{ x|default('d') }}{{ ''|default('d') }}{{ ''|default('d', true) }}{{ x|d(5) }}",
           NULL, "dd5");
    EXPECT("{{ '42'|int }}{{ '42.7'|int }}{{ 'x'|int }}{{ 'x'|int(7) }}{{ 3.9|int }}"
           "{{ '0x1A'|int(0, 16) }}{{ '3.5'|float }}{{ 2|float }}{{ 'n'|float }}{{ 5|string }}",
           NULL, "4242073263.52.00.05");
    EXPECT("{{ {'b':1,'a':2}|items|list }}{{ {'b':1,'A':2,'a':3}|dictsort }}"
           "{{ {'b':1,'a':2}|dictsort(by='value', reverse=true) }}",
           NULL,
           "[('b', 1), ('a', 2)][('A', 2), ('a', 3), ('b', 1)][('a', 2), ('b', 1)]");
    EXPECT("{{ ms|map(attribute='role')|list }}{{ ms|map(attribute='x', default='-')|list }}"
           "{{ ms|selectattr('role', 'equalto', 'user')|map(attribute='content')|join }}"
           "{{ ms|rejectattr('role', '==', 'user')|list|length }}"
           "{{ ms|selectattr('content')|list|length }}",
           "{\"ms\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"bot\",\"content\":\"\"},"
           "{\"role\":\"user\",\"content\":\"c\"}]}",
           "['user', 'bot', 'user']['-', '-', '-']ac12");
    EXPECT("{{ [1,2,3,4,5]|batch(2)|list }}{{ [1,2,3]|batch(2, 0)|list }}{{ [1,2,3,4,5]|slice(2)|list }}"
           "{{ [1]|select|list }}{{ 0|select|list }}{{ none|map('upper')|list }}",
           NULL, "[[1, 2], [3, 4], [5]][[1, 2], [3, 0]][[1, 2, 3], [4, 5]][1][][]");
    EXPECT("{{ [1,2,3,4]|select('odd')|list }}{{ [1,2,3,4]|reject('odd')|list }}"
           "{{ [0,1,'']|select|list }}{{ ['a','B']|map('upper')|list }}"
           "{{ [1,2]|map('string')|list }}",
           NULL, "[1, 3][2, 4][1]['A', 'B']['1', '2']");
    EXPECT("{{ [3,1,2]|sort }}{{ ['b','A','a']|sort }}{{ ['b','A','a']|sort(case_sensitive=true) }}"
           "{{ [3,1,2]|sort(reverse=true) }}{{ ms|sort(attribute='n')|map(attribute='n')|list }}"
           "{{ ['b','A','a','b']|unique|list }}{{ [1,2,1]|unique|list }}",
           "{\"ms\":[{\"n\":2},{\"n\":1}]}",
           "[1, 2, 3]['A', 'a', 'b']['A', 'a', 'b'][3, 2, 1][1, 2]['b', 'A'][1, 2]");
    EXPECT("{{ [1,5,3]|max }}{{ [1,5,3]|min }}{{ ['a','B']|max }}{{ [1,2,3]|sum }}"
           "{{ ms|sum(attribute='n') }}{{ [1.5]|sum }}{{ -3|abs }}{{ 2.567|round(2) }}"
           "{{ 2.5|round }}{{ 3.5|round }}{{ 2.1|round(method='ceil') }}{{ [1,2]|reverse|list }}"
           "{{ 'abc'|reverse }}",
           "{\"ms\":[{\"n\":2},{\"n\":1}]}", "51B631.532.572.04.03.0[2, 1]cba");
    EXPECT("{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|"
           "{{ 'a\\n\\nb'|indent(2, blank=true) }}|{{ 'a\\nb'|indent('> ') }}",
           NULL, "a\n  b\n\n  c|  a\n  b|a\n  \n  b|a\n> b");
    EXPECT("{{ '<a href=\"x\">&\\'</a>'|e }}{{ 'x'|safe }}{{ 'one two  three'|wordcount }}"
           "{{ 'ab'|center(6) }}|{{ x|attr('items') is callable }}{{ x|attr('k') }}",
           "{\"x\":{\"k\":1}}",
           "&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt;x3  ab  |True");
    EXPECT_FAIL("{{ x|tojson }}", NULL, LP_ERR_INVALID,
                "Object of type Undefined is not JSON serializable");
    EXPECT_FAIL("{{ 1|nosuchfilter }}", NULL, LP_ERR_FORMAT, "no filter named 'nosuchfilter'");
    EXPECT_FAIL("{{ 1 is nosuchtest }}", NULL, LP_ERR_FORMAT, "no test named 'nosuchtest'");
    EXPECT_FAIL("{{ 'x'|urlize }}", NULL, LP_ERR_UNSUPPORTED, "urlize");
}

/* ---- errors and undefined ---- */

static void test_errors(void) {
    /* undefined renders empty, but misusing it fails like Jinja */
    EXPECT("[{{ nope }}][{{ nope|upper }}]{{ nope is defined }}{{ not nope }}", NULL,
           "[][]FalseTrue");
    EXPECT_FAIL("{{ nope.attr }}", NULL, LP_ERR_INVALID, "'nope' is undefined");
    EXPECT_FAIL("{{ d.a.b }}", "{\"d\":{}}", LP_ERR_INVALID,
                "'dict object' has no attribute 'a'");
    EXPECT_FAIL("{{ nope + 1 }}", NULL, LP_ERR_INVALID, "'nope' is undefined");
    EXPECT_FAIL("{{ nope() }}", NULL, LP_ERR_INVALID, "'nope' is undefined");
    EXPECT_FAIL("{{ 1 + 'a' }}", NULL, LP_ERR_INVALID,
                "unsupported operand type(s) for +: 'int' and 'str'");
    EXPECT_FAIL("{{ 'a' + 1 }}", NULL, LP_ERR_INVALID,
                "can only concatenate str (not \"int\") to str");
    EXPECT_FAIL("{{ 1 / 0 }}", NULL, LP_ERR_INVALID, "division by zero");
    EXPECT_FAIL("{{ 'a' < 1 }}", NULL, LP_ERR_INVALID,
                "'<' not supported between instances of 'str' and 'int'");
    EXPECT_FAIL("{{ [].append(1) }}", NULL, LP_ERR_INVALID,
                "access to attribute 'append' of 'list' object is unsafe.");
    EXPECT_FAIL("{{ 1 in none }}", NULL, LP_ERR_INVALID,
                "argument of type 'NoneType' is not iterable");
    EXPECT_FAIL("{% set x = 1 %}{% set x.y = 2 %}", NULL, LP_ERR_INVALID,
                "non-namespace");
    EXPECT_FAIL("{{ 2 ** 64 }}", NULL, LP_ERR_RANGE, "overflow");
    /* raise_exception: exact message, flagged */
    {
        const char *src = "{{ raise_exception('Only user and assistant roles!') }}";
        lp_chat_template *t = NULL;
        lp_error err = {0};
        CHECK(lp_chat_template_compile(src, strlen(src), &t, &err) == LP_OK);
        char *out = (char *)&err;
        size_t n = 1;
        bool raised = false;
        int rc = lp_chat_template_render(t, NULL, NULL, &out, &n, &raised, &err);
        CHECK(rc == LP_ERR_INVALID && raised && out == NULL && n == 0);
        CHECKF(strcmp(err.msg, "Only user and assistant roles!") == 0, "%s", err.msg);
        /* other runtime errors are not "raised" and name the line */
        lp_chat_template_free(t);
        src = "a\nb\n{{ 1 / 0 }}";
        CHECK(lp_chat_template_compile(src, strlen(src), &t, &err) == LP_OK);
        raised = true;
        rc = lp_chat_template_render(t, NULL, NULL, &out, &n, &raised, &err);
        CHECKF(rc == LP_ERR_INVALID && !raised && strncmp(err.msg, "line 3:", 7) == 0, "%s",
               err.msg);
        lp_chat_template_free(t);
    }
    /* variables must be an object */
    {
        lp_chat_template *t = NULL;
        lp_error err = {0};
        CHECK(lp_chat_template_compile("x", 1, &t, &err) == LP_OK);
        json_t *arr = json_array();
        char *out = NULL;
        CHECK(lp_chat_template_render(t, arr, NULL, &out, NULL, NULL, &err) == LP_ERR_INVALID);
        json_decref(arr);
        lp_chat_template_free(t);
    }
}

/* ---- syntax errors name line:col ---- */

static void test_syntax(void) {
    EXPECT_FAIL("ab\n{% if x %}\n  {{ 1 + }}\n{% endif %}", NULL, LP_ERR_FORMAT, "line 3:10:");
    EXPECT_FAIL("{% for x in y %}", NULL, LP_ERR_FORMAT, "expected 'endfor' or 'else'");
    EXPECT_FAIL("\n\n  {% endif %}", NULL, LP_ERR_FORMAT, "line 3:6: unknown tag 'endif'");
    EXPECT_FAIL("{{ (1 }}", NULL, LP_ERR_FORMAT, "line 1:");
    EXPECT_FAIL("{{ 1 ]}}", NULL, LP_ERR_FORMAT, "unexpected ']'");
    EXPECT_FAIL("{{ 'abc }}", NULL, LP_ERR_FORMAT, "line 1:4: unexpected char '''");
    EXPECT_FAIL("{# never closed", NULL, LP_ERR_FORMAT, "line 1:1: missing end of comment");
    EXPECT_FAIL("{% raw %}x", NULL, LP_ERR_FORMAT, "missing end of raw");
    EXPECT_FAIL("x {{ a !b }}", NULL, LP_ERR_FORMAT, "line 1:8: unexpected char '!'");
    EXPECT_FAIL("{% break %}", NULL, LP_ERR_FORMAT, "outside of a loop");
    EXPECT_FAIL("{% include 'x' %}", NULL, LP_ERR_UNSUPPORTED, "include");
    EXPECT_FAIL("{% set 1 = 2 %}", NULL, LP_ERR_FORMAT, "can't assign");
    EXPECT_FAIL("{{ 99999999999999999999 }}", NULL, LP_ERR_UNSUPPORTED, "out of range");
    EXPECT_FAIL("{{ '\\xZZ' }}", NULL, LP_ERR_FORMAT, "truncated \\x escape");
    /* invalid UTF-8 in the source */
    expect_fail_ex(__LINE__, "ok\n\xff", 4, NULL, LP_ERR_FORMAT, "line 2:1: invalid UTF-8", NULL);
    /* NUL bytes are data, not terminators */
    expect_ex(__LINE__, "a", NULL, "a", 1);
}

static char *repeat_str(const char *a, size_t na, const char *mid, const char *b,
                        size_t nb, size_t times) {
    size_t la = strlen(a), lm = strlen(mid), lb = strlen(b);
    size_t total = la * times + lm + lb * times + 1;
    char *s = malloc(total);
    if (!s)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < times; i++, k += la)
        memcpy(s + k, a, la);
    memcpy(s + k, mid, lm);
    k += lm;
    for (size_t i = 0; i < times; i++, k += lb)
        memcpy(s + k, b, lb);
    s[k] = '\0';
    (void)na;
    (void)nb;
    return s;
}

/* ---- limits and hostile inputs ---- */

static void test_limits(void) {
    lp_template_limits lim = fixed_limits();
    double t0 = now_s();
    /* runaway loop: the sandbox caps range(), nested loops hit max_steps */
    EXPECT_FAIL("{% for i in range(10**9) %}{% endfor %}", NULL, LP_ERR_LIMIT, "MAX_RANGE");
    EXPECT_FAIL("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                NULL, LP_ERR_LIMIT, "max_steps");
    double dt = now_s() - t0;
    CHECKF(dt < 10.0, "runaway loop took %.2f s", dt);
    /* output bomb */
    t0 = now_s();
    EXPECT_FAIL("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", NULL, LP_ERR_LIMIT,
                "max_output");
    /* memory bomb: doubling a string */
    EXPECT_FAIL("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                "{% endfor %}{{ ns.s|length }}",
                NULL, LP_ERR_LIMIT, "max_memory");
    EXPECT_FAIL("{{ 'x' * 10**15 }}", NULL, LP_ERR_LIMIT, "max_memory");
    EXPECT_FAIL("{{ [1] * 10**15 }}", NULL, LP_ERR_LIMIT, "max_memory");
    dt = now_s() - t0;
    CHECKF(dt < 10.0, "output/memory bombs took %.2f s", dt);
    /* C recursion of the evaluator is bounded too, across macro calls */
    {
        char *chain = repeat_str("", 0, "f(n - 1)", " + 1", 0, 400);
        size_t n = chain ? strlen(chain) + 128 : 0;
        char *src = chain ? malloc(n) : NULL;
        if (src) {
            snprintf(src, n, "{%% macro f(n) %%}{%% if n > 0 %%}{{ %s }}{%% else %%}0"
                             "{%% endif %%}{%% endmacro %%}{{ f(20) }}", chain);
            expect_fail_ex(__LINE__, src, strlen(src), NULL, LP_ERR_LIMIT,
                           "evaluation nested deeper", NULL);
        }
        free(src);
        free(chain);
    }
    /* recursion: macro depth */
    EXPECT_FAIL("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, LP_ERR_LIMIT,
                "max_depth");
    /* tight custom limits */
    lim.max_steps = 1000;
    expect_fail_ex(__LINE__, "{% for i in range(2000) %}{% endfor %}", 38, NULL, LP_ERR_LIMIT,
                   "max_steps (1000)", &lim);
    lim = fixed_limits();
    lim.max_output = 10;
    expect_fail_ex(__LINE__, "{{ 'x' * 11 }}", 14, NULL, LP_ERR_LIMIT, "max_output (10 bytes)",
                   &lim);
    lim = fixed_limits();
    lim.max_depth = 3;
    {
        const char *src = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{% endif %}x{% endmacro %}"
                          "{{ f(2) }}";
        expect_fail_ex(__LINE__, src, strlen(src), NULL, LP_OK, NULL, &lim);
        src = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{% endif %}x{% endmacro %}{{ f(3) }}";
        expect_fail_ex(__LINE__, src, strlen(src), NULL, LP_ERR_LIMIT, "max_depth (3)", &lim);
    }
}

static void test_deep_nesting(void) {
    static const struct {
        const char *open, *mid, *close;
        bool stmt;
    } shapes[] = {
        {"(", "1", ")", false},                 /* parentheses */
        {"[", "1", "]", false},                 /* lists */
        {"{'a': ", "1", "}", false},            /* dicts */
        {"not ", "x", "", false},               /* unary chains */
        {"-", "1", "", false},
        {"", "1", " + 1", false},               /* left-deep binary chain */
        {"", "x", ".a", false},                 /* attribute chain */
        {"", "x", "|trim", false},              /* filter chain */
        {"", "1", " if x else 2", false},       /* conditional chain */
        {"x[", "0", "]", false},                /* subscripts */
        {"{% if x %}", "", "{% endif %}", true}, /* statements */
        {"{% for x in y %}", "", "{% endfor %}", true},
        {"{% macro m() %}", "", "{% endmacro %}", true},
    };
    double t0 = now_s();
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        bool stmt = shapes[k].stmt;
        char *inner = repeat_str(shapes[k].open, 0, shapes[k].mid, shapes[k].close, 0, 100000);
        CHECK(inner != NULL);
        if (!inner)
            continue;
        size_t n = strlen(inner) + 8;
        char *src = malloc(n);
        if (!src) {
            free(inner);
            continue;
        }
        snprintf(src, n, stmt ? "%s" : "{{ %s }}", inner);
        lp_chat_template *t = NULL;
        lp_error err = {0};
        int rc = lp_chat_template_compile(src, strlen(src), &t, &err);
        CHECKF(rc == LP_ERR_LIMIT && t == NULL, "shape %zu: rc=%s %s", k, lp_status_name(rc),
               err.msg);
        lp_chat_template_free(t);
        free(src);
        free(inner);
    }
    /* a huge but flat template hits the compile memory cap, not the OOM killer */
    {
        char *big = repeat_str("1,", 0, "", "", 0, 1500000);
        size_t n = big ? strlen(big) + 16 : 0;
        char *src = big ? malloc(n) : NULL;
        if (src) {
            snprintf(src, n, "{{ [%s] }}", big);
            expect_fail_ex(__LINE__, src, strlen(src), NULL, LP_ERR_LIMIT,
                           "compiled form exceeds", NULL);
        }
        free(src);
        free(big);
    }
    /* moderate nesting still works */
    char *ok = repeat_str("(", 0, "1", ")", 0, 100);
    char *src = ok ? malloc(strlen(ok) + 8) : NULL;
    if (src) {
        snprintf(src, strlen(ok) + 8, "{{ %s }}", ok);
        EXPECT(src, NULL, "1");
    }
    free(src);
    free(ok);
    ok = repeat_str("[", 0, "1", "]", 0, 60);
    src = ok ? malloc(strlen(ok) + 8) : NULL;
    if (src) {
        snprintf(src, strlen(ok) + 8, "{{ %s }}", ok);
        expect_ex(__LINE__, src, NULL, ok, strlen(ok));
    }
    free(src);
    free(ok);
    /* deeply nested input JSON is bounded too */
    char *deep = repeat_str("[", 0, "1", "]", 0, 1500);
    json_error_t je;
    json_t *arr = deep ? json_loads(deep, 0, &je) : NULL;
    if (arr) {
        json_t *vars = json_pack("{s:o}", "x", arr);
        lp_chat_template *t = NULL;
        lp_error err = {0};
        CHECK(lp_chat_template_compile("{{ x|tojson }}", 14, &t, &err) == LP_OK);
        char *out = NULL;
        int rc = lp_chat_template_render(t, vars, NULL, &out, NULL, NULL, &err);
        CHECKF(rc == LP_ERR_LIMIT, "deep JSON: %s %s", lp_status_name(rc), err.msg);
        free(out);
        lp_chat_template_free(t);
        json_decref(vars);
    }
    free(deep);
    double dt = now_s() - t0;
    CHECKF(dt < 10.0, "deep nesting took %.2f s", dt);
}

/* ---- model directory loading ---- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECKF(f != NULL, "cannot write %s", path);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_load_model(const char *data) {
    char dir[] = "/tmp/lp_ct_test_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char cfg[512], jinja[512];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    snprintf(jinja, sizeof jinja, "%s/chat_template.jinja", dir);
    char *src = NULL, *bos = NULL, *eos = NULL;
    lp_error err = {0};
    CHECK(lp_chat_template_load_model(dir, &src, &bos, &eos, &err) == LP_ERR_NOT_FOUND);
    write_text(cfg, "{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}, "
                    "\"eos_token\": \"</s>\", \"chat_template\": [{\"name\": \"tool_use\", "
                    "\"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D\"}]}");
    CHECK(lp_chat_template_load_model(dir, &src, &bos, &eos, &err) == LP_OK);
    CHECK(src && strcmp(src, "D") == 0 && bos && strcmp(bos, "<s>") == 0 && eos &&
          strcmp(eos, "</s>") == 0);
    free(src);
    free(bos);
    free(eos);
    write_text(jinja, "J{{ 1 }}\n");
    CHECK(lp_chat_template_load_model(dir, &src, NULL, NULL, &err) == LP_OK);
    CHECK(src && strcmp(src, "J{{ 1 }}\n") == 0);
    free(src);
    remove(jinja);
    write_text(cfg, "{\"chat_template\": 5}");
    CHECK(lp_chat_template_load_model(dir, &src, &bos, &eos, &err) == LP_ERR_FORMAT);
    write_text(cfg, "{\"chat_template\": [{\"name\": \"x\", \"template\": \"T\"}]}");
    CHECK(lp_chat_template_load_model(dir, &src, &bos, &eos, &err) == LP_ERR_NOT_FOUND);
    write_text(cfg, "{not json");
    CHECK(lp_chat_template_load_model(dir, &src, &bos, &eos, &err) == LP_ERR_FORMAT);
    remove(cfg);
    rmdir(dir);
    /* the real tiny model next to the test data */
    char model[1024];
    snprintf(model, sizeof model, "%s/../../models/tinylm", data);
    FILE *probe = fopen(model, "r");
    if (probe) {
        fclose(probe);
        int rc = lp_chat_template_load_model(model, &src, &bos, &eos, &err);
        CHECKF(rc == LP_OK && src && bos == NULL && eos && strcmp(eos, "<|im_end|>") == 0,
               "tinylm: %s", err.msg);
        free(src);
        free(bos);
        free(eos);
    }
}

int main(int argc, char **argv) {
    const char *data = argc > 1 ? argv[1] : "tests/data";
    static const char *const names[] = {"tinylm", "llama3", "llama3_1",
                                        "qwen3",  "gemma3", "deepseek_v3"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        test_fixture(data, names[i]);
    test_whitespace();
    test_loops();
    test_expressions();
    test_slicing();
    test_filters();
    test_errors();
    test_syntax();
    test_limits();
    test_deep_nesting();
    test_load_model(data);
    return lp_test_finish("chat_template");
}
