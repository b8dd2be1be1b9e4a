// sg_executable_readonly_segments: the executable's read-only PT_LOAD segments (StartupPages).
#define _GNU_SOURCE
#include <link.h>
#include <unistd.h>
#include "segguard_shims.h"

struct segments { uintptr_t *starts, *ends; int max, count; };

static int first_object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct segments *s = data;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < info->dlpi_phnum && s->count < s->max; i++) {
        const ElfW(Phdr) *h = &info->dlpi_phdr[i];
        if (h->p_type != PT_LOAD || (h->p_flags & PF_W) || h->p_memsz == 0) continue;
        uintptr_t start = info->dlpi_addr + h->p_vaddr, end = start + h->p_memsz;
        uintptr_t first = (start + page - 1) / page * page, last = end / page * page;
        if (first < last) { s->starts[s->count] = first; s->ends[s->count] = last; s->count++; }
    }
    return 1;  /* the first object is the executable: stop */
}

int sg_executable_readonly_segments(uintptr_t *starts, uintptr_t *ends, int max) {
    struct segments s = { starts, ends, max, 0 };
    dl_iterate_phdr(first_object, &s);
    return s.count;
}
