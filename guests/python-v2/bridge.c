/* The embedding of Python engine v2 (a static, non-PIC CPython core module): what wasmagent calls instead of
 * CPython's `main`. Linked as a WASI reactor by scripts/build-cpython-wasi.sh into `python-bridge.wasm`.
 *
 * (wasmtime-wizer runs the reactor's `_initialize`, wasi-libc's constructors, before `wizer-initialize`.)
 *
 *   wizer-initialize  starts the interpreter (isolated: no site, no environment, no user directories) and imports
 *                     the modules most runs use, once, before the snapshot is taken (`cargo xtask python-v2-snapshot`);
 *   code_buffer(n)    returns n + 1 writable bytes for the next run's UTF-8 source;
 *   run(ptr, n)       runs it as a module body, flushes stdout and stderr, and returns 0, or 1 if it raised.
 *
 * It has no host bridge yet (tools, HTTP, results as JSON): this is the measurement milestone of issue 24. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

__attribute__((export_name("wizer-initialize"))) void wizer_initialize(void) {
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.write_bytecode = 0;
    PyStatus status = PyConfig_SetString(&config, &config.home, L"/");
    if (!PyStatus_Exception(status)) {
        status = Py_InitializeFromConfig(&config);
    }
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        Py_ExitStatusException(status);
    }
    if (PyRun_SimpleString("import json, re, math, random, collections, datetime, itertools, functools\n") != 0) {
        abort();
    }
}

__attribute__((export_name("code_buffer"))) char *code_buffer(size_t len) {
    return malloc(len + 1);
}

__attribute__((export_name("run"))) int run(char *code, size_t len) {
    code[len] = '\0';
    int failed = PyRun_SimpleString(code) != 0;
    free(code);
    PyRun_SimpleString("import sys\nsys.stdout.flush()\nsys.stderr.flush()\n");
    return failed;
}
