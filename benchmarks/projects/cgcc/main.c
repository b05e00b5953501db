/* wordfreq: print the N most frequent words of stdin.  The benchmark's "edit one source file"
 * touches this file. */
#include "table.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    long top = argc > 1 ? strtol(argv[1], NULL, 10) : 10;
    struct table t;
    char word[256];
    size_t len = 0;
    int c;

    if (table_init(&t))
        return 1;
    while ((c = getchar()) != EOF) {
        if (isalnum(c) && len < sizeof word) {
            word[len++] = (char)tolower(c);
        } else if (len) {
            if (table_add(&t, word, len))
                return 1;
            len = 0;
        }
    }
    if (len && table_add(&t, word, len))
        return 1;
    struct entry *sorted;
    size_t n = table_sorted(&t, &sorted);
    for (size_t i = 0; i < n && (long)i < top; i++)
        printf("%7lu %s\n", sorted[i].count, sorted[i].word);
    free(sorted);
    table_free(&t);
    return 0;
}
