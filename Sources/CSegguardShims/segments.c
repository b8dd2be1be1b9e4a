// sg_readonly_segments: the read-only PT_LOAD segments of the executable and its libraries
// (StartupPages).
#define _GNU_SOURCE
#include <link.h>
#include <unistd.h>
#include "segguard_shims.h"

struct segments { uintptr_t *starts, *ends; int max, count, libraries, index; };

/* Whether the loader had to write to this object's code (text relocations): its read-only
   pages are then private copies that differ from the file and must never be dropped. */
static int has_text_relocations(const struct dl_phdr_info *info) {
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *h = &info->dlpi_phdr[i];
        if (h->p_type != PT_DYNAMIC) continue;
        for (const ElfW(Dyn) *d = (const ElfW(Dyn) *)(info->dlpi_addr + h->p_vaddr); d->d_tag != DT_NULL; d++) {
            if (d->d_tag == DT_TEXTREL) return 1;
            if (d->d_tag == DT_FLAGS && (d->d_un.d_val & DF_TEXTREL)) return 1;
        }
    }
    return 0;
}

static int object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct segments *s = data;
    int first = s->index++ == 0;  /* the first object is the executable */
    if (!first) {
        if (!s->libraries) return 1;
        /* Libraries loaded from a file only: not the vDSO (no path), nothing without a name. */
        if (info->dlpi_name == NULL || info->dlpi_name[0] != '/') return 0;
    }
    if (has_text_relocations(info)) return 0;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < info->dlpi_phnum && s->count < s->max; i++) {
        const ElfW(Phdr) *h = &info->dlpi_phdr[i];
        if (h->p_type != PT_LOAD || (h->p_flags & PF_W) || h->p_memsz == 0) continue;
        uintptr_t start = info->dlpi_addr + h->p_vaddr, end = start + h->p_memsz;
        uintptr_t lo = (start + page - 1) / page * page, hi = end / page * page;
        if (lo < hi) { s->starts[s->count] = lo; s->ends[s->count] = hi; s->count++; }
    }
    return s->count >= s->max;
}

int sg_readonly_segments(uintptr_t *starts, uintptr_t *ends, int max, int libraries) {
    struct segments s = { starts, ends, max, 0, libraries, 0 };
    dl_iterate_phdr(object, &s);
    return s.count;
}
