/* Profile-guided optimisation of the Python engine, training step only (scripts/build-cpython-wasi.sh with
 * PGO_TRAIN=1): linked into the instrumented interpreter with LLVM's profile runtime (compiler-rt's, as the minicov
 * crate packages it without its own file I/O), it writes the run's counters and value profiles to
 * $LLVM_PROFILE_FILE when the interpreter exits. Never part of the engine. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "InstrProfilingInternal.h"

/* Referenced by every instrumented object, so that the runtime is linked in. */
int __llvm_profile_runtime;

static uint32_t write_to_file(ProfDataWriter *writer, ProfDataIOVec *vectors, uint32_t count) {
    FILE *file = writer->WriterCtx;
    for (uint32_t i = 0; i < count; i++) {
        size_t bytes = vectors[i].ElmSize * vectors[i].NumElm;
        if (vectors[i].UseZeroPadding) {
            for (size_t j = 0; j < bytes; j++) {
                if (fputc(0, file) == EOF) {
                    return 1;
                }
            }
        } else if (bytes && fwrite(vectors[i].Data, 1, bytes, file) != bytes) {
            return 1;
        }
    }
    return 0;
}

static void write_profile(void) {
    const char *path = getenv("LLVM_PROFILE_FILE");
    FILE *file = path ? fopen(path, "wb") : NULL;
    if (file == NULL) {
        fprintf(stderr, "profile-dump: cannot open LLVM_PROFILE_FILE (%s)\n", path ? path : "unset");
        exit(70);
    }
    ProfDataWriter writer = {write_to_file, file};
    if (lprofWriteData(&writer, lprofGetVPDataReader(), 0) != 0 || fclose(file) != 0) {
        fprintf(stderr, "profile-dump: writing %s failed\n", path);
        exit(70);
    }
}

__attribute__((constructor)) static void register_writer(void) { atexit(write_profile); }

/* The allocator the value-profiling runtime asks for (minicov leaves it to its user). */
void *minicov_alloc_zeroed(size_t size, size_t align) {
    (void)align; /* calloc's 16-byte alignment covers the runtime's nodes */
    return calloc(1, size);
}

void minicov_dealloc(void *ptr, size_t size, size_t align) {
    (void)size;
    (void)align;
    free(ptr);
}
