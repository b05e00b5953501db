#include "table.h"

#include <stdlib.h>
#include <string.h>

static unsigned long hash(const char *s, size_t len)
{
    unsigned long h = 1469598103934665603UL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211UL;
    return h;
}

int table_init(struct table *t)
{
    t->size = (size_t)1 << TABLE_BITS;
    t->used = 0;
    t->slots = calloc(t->size, sizeof *t->slots);
    return t->slots ? 0 : -1;
}

static int grow(struct table *t)
{
    struct table bigger = { calloc(t->size * 2, sizeof *t->slots), t->size * 2, t->used };
    if (!bigger.slots)
        return -1;
    for (size_t i = 0; i < t->size; i++) {
        struct entry *e = &t->slots[i];
        if (!e->word)
            continue;
        size_t j = hash(e->word, strlen(e->word)) & (bigger.size - 1);
        while (bigger.slots[j].word)
            j = (j + 1) & (bigger.size - 1);
        bigger.slots[j] = *e;
    }
    free(t->slots);
    *t = bigger;
    return 0;
}

int table_add(struct table *t, const char *word, size_t len)
{
    if (2 * (t->used + 1) > t->size && grow(t))
        return -1;
    size_t j = hash(word, len) & (t->size - 1);
    for (; t->slots[j].word; j = (j + 1) & (t->size - 1))
        if (strlen(t->slots[j].word) == len && !memcmp(t->slots[j].word, word, len)) {
            t->slots[j].count++;
            return 0;
        }
    if (!(t->slots[j].word = strndup(word, len)))
        return -1;
    t->slots[j].count = 1;
    t->used++;
    return 0;
}

static int by_count(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(x->word, y->word);
}

size_t table_sorted(const struct table *t, struct entry **out)
{
    size_t n = 0;
    *out = malloc((t->used ? t->used : 1) * sizeof **out);
    if (!*out)
        return 0;
    for (size_t i = 0; i < t->size; i++)
        if (t->slots[i].word)
            (*out)[n++] = t->slots[i];
    qsort(*out, n, sizeof **out, by_count);
    return n;
}

void table_free(struct table *t)
{
    for (size_t i = 0; i < t->size; i++)
        free(t->slots[i].word);
    free(t->slots);
}
