/* A small open-addressing hash table of words and their counts. */
#ifndef TABLE_H
#define TABLE_H

#include <stddef.h>

#ifndef TABLE_BITS
#define TABLE_BITS 16
#endif

struct entry {
    char *word;
    unsigned long count;
};

struct table {
    struct entry *slots;
    size_t size, used;
};

int table_init(struct table *t);
int table_add(struct table *t, const char *word, size_t len);
size_t table_sorted(const struct table *t, struct entry **out);
void table_free(struct table *t);

#endif
