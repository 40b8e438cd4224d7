/* replay.c - run a fuzz driver without libFuzzer: every file of a corpus
 * directory (or single files) as given, then a fixed set of deterministic
 * mutations of each (bit flips, truncations, byte insertions), so every
 * build, sanitizer builds included, exercises the parser on hostile input. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static long g_runs = 0;

static void run(const uint8_t *d, size_t n) {
    LLVMFuzzerTestOneInput(d, n);
    g_runs++;
}

static void replay_buf(const uint8_t *buf, size_t len, int mutations) {
    run(buf, len);
    uint8_t *m = malloc(len + 16);
    if (!m)
        return;
    for (int i = 0; i < mutations; i++) {
        size_t n = len;
        memcpy(m, buf, len);
        switch (next_rand() % 5) {
        case 0: /* flip a bit */
            if (n)
                m[next_rand() % n] ^= (uint8_t)(1u << (next_rand() % 8));
            break;
        case 1: /* truncate */
            n = n ? next_rand() % n : 0;
            break;
        case 2: /* overwrite a byte with an interesting value */
            if (n) {
                static const uint8_t v[] = {0, 0xff, '"', '{', '}', '[', ']', ',', ':', '\\', 0x80, '9', '-'};
                m[next_rand() % n] = v[next_rand() % sizeof v];
            }
            break;
        case 3: /* duplicate a span */
            if (n > 2) {
                size_t at = next_rand() % n, k = 1 + next_rand() % 8;
                if (at + k > n)
                    k = n - at;
                if (n + k <= len + 16) {
                    memmove(m + at + k, m + at, n - at);
                    n += k;
                }
            }
            break;
        default: /* delete a span */
            if (n > 2) {
                size_t at = next_rand() % n, k = 1 + next_rand() % 8;
                if (at + k > n)
                    k = n - at;
                memmove(m + at, m + at + k, n - at - k);
                n -= k;
            }
            break;
        }
        run(m, n);
    }
    free(m);
}

static void replay_path(const char *path, int mutations) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: cannot stat %s\n", path);
        exit(2);
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *dir = opendir(path);
        if (!dir)
            return;
        struct dirent *e;
        while ((e = readdir(dir))) {
            if (e->d_name[0] == '.')
                continue;
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            replay_path(sub, mutations);
        }
        closedir(dir);
        return;
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    size_t len = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (buf)
        replay_buf(buf, len, mutations);
    free(buf);
}

int main(int argc, char **argv) {
    int mutations = 500;
    const char *env = getenv("LORAPLEX_FUZZ_MUTATIONS");
    if (env)
        mutations = (int)strtol(env, NULL, 10);
    for (int i = 1; i < argc; i++)
        replay_path(argv[i], mutations);
    printf("replayed %ld inputs\n", g_runs);
    return 0;
}
