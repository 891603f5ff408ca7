/* The Python engine's embedding: what wasmagent calls instead of CPython's `main`. `cargo xtask guests` links it with
 * the interpreter (scripts/build-cpython-wasi.sh's link kit) as a WASI reactor and pre-initialises it with
 * wasmtime-wizer.
 *
 * Exports (the same run protocol as the JavaScript engine, guests/js):
 *   wizer-initialize       starts the interpreter (isolated: no site, no environment, no user directories), imports
 *                          `runner` (which imports the standard library and the `wasmagent` package from the
 *                          build's preopened directories, then empties `sys.path`), and forgets the build's
 *                          preopens and environment, so the snapshot holds none of them;
 *   wasmagent-freeze       (`wasmagent engine build python` only) imports every module of the packages in the
 *                          preopened directory /packages into the interpreter (`runner._freeze`), to be snapshotted
 *                          again as a custom engine; forgets the preopens again;
 *   wasmagent_alloc(n)     returns n writable bytes for the next run's request (JSON);
 *   wasmagent_run(ptr, n)  runs it (`runner._entry`) and hands the answer (JSON) to the host's `wasmagent.result`.
 *
 * Imports (`wasmagent.*`, checked on the host: crates/kernel-wasi/src/script_bridge.rs), offered to Python as the
 * built-in module `_wasmagent_host`: `call_tool`, `http_request` and `artifact`, whose answers the host keeps until
 * `tool_response` copies them into a buffer of the length it announced (negative: an error message). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <wasi/libc-environ.h>

#define IMPORT(name) __attribute__((import_module("wasmagent"), import_name(name)))

IMPORT("result") void host_result(const char *ptr, int32_t len);
IMPORT("tool_call") int32_t host_tool_call(const char *name, int32_t name_len, const char *args, int32_t args_len);
IMPORT("http_request") int32_t host_http_request(const char *meta, int32_t meta_len, const char *body, int32_t body_len);
IMPORT("artifact") int32_t host_artifact(const char *meta, int32_t meta_len, const char *body, int32_t body_len);
IMPORT("tool_response") int32_t host_tool_response(char *ptr, int32_t len);

void __wasilibc_reset_preopens(void);

/* `_wasmagent_host.HostError`: the host refused or failed a call; its message says why. */
static PyObject *host_error;
/* `runner._entry`, looked up once at build time. */
static PyObject *entry;

/* The answer the host announced with `announced` bytes (negative: an error message of that many bytes), as bytes,
 * or NULL with HostError (or MemoryError) set. */
static PyObject *collect(int32_t announced) {
    int failed = announced < 0;
    Py_ssize_t len = failed ? -(Py_ssize_t)announced : announced;
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, len);
    if (bytes == NULL) {
        return NULL;
    }
    if (host_tool_response(PyBytes_AS_STRING(bytes), (int32_t)len) != 0) {
        Py_DECREF(bytes);
        PyErr_SetString(host_error, "the host's answer could not be collected");
        return NULL;
    }
    if (!failed) {
        return bytes;
    }
    PyObject *message = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(bytes), len, "replace");
    Py_DECREF(bytes);
    if (message != NULL) {
        PyErr_SetObject(host_error, message);
        Py_DECREF(message);
    }
    return NULL;
}

/* A length the host's 32-bit ABI can carry, or -1 with ValueError set. */
static int32_t abi_len(Py_ssize_t len, const char *what) {
    if (len > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "the %s is too large (%zd bytes)", what, len);
        return -1;
    }
    return (int32_t)len;
}

/* call_tool(name: str, args: str) -> bytes: the tool's result (JSON). */
static PyObject *call_tool(PyObject *self, PyObject *args) {
    PyObject *name_text, *json_text;
    const char *name, *json;
    Py_ssize_t name_len, json_len;
    if (!PyArg_ParseTuple(args, "UU:call_tool", &name_text, &json_text)) {
        return NULL;
    }
    if ((name = PyUnicode_AsUTF8AndSize(name_text, &name_len)) == NULL ||
        (json = PyUnicode_AsUTF8AndSize(json_text, &json_len)) == NULL) {
        return NULL;
    }
    int32_t n1 = abi_len(name_len, "tool name"), n2 = abi_len(json_len, "tool arguments");
    if (n1 < 0 || n2 < 0) {
        return NULL;
    }
    return collect(host_tool_call(name, n1, json, n2));
}

/* http_request(meta: bytes, body: bytes) -> bytes: u32 LE metadata length, metadata (JSON), body. */
static PyObject *http_request(PyObject *self, PyObject *args) {
    PyObject *first, *second;
    if (!PyArg_ParseTuple(args, "SS:http_request", &first, &second)) {
        return NULL;
    }
    int32_t n1 = abi_len(PyBytes_GET_SIZE(first), "request"), n2 = abi_len(PyBytes_GET_SIZE(second), "body");
    if (n1 < 0 || n2 < 0) {
        return NULL;
    }
    return collect(host_http_request(PyBytes_AS_STRING(first), n1, PyBytes_AS_STRING(second), n2));
}

/* artifact(meta: bytes, content: bytes) -> bool: True when added, False when a limit refused it. */
static PyObject *artifact(PyObject *self, PyObject *args) {
    PyObject *first, *second;
    if (!PyArg_ParseTuple(args, "SS:artifact", &first, &second)) {
        return NULL;
    }
    int32_t n1 = abi_len(PyBytes_GET_SIZE(first), "description"), n2 = abi_len(PyBytes_GET_SIZE(second), "content");
    if (n1 < 0 || n2 < 0) {
        return NULL;
    }
    int32_t outcome = host_artifact(PyBytes_AS_STRING(first), n1, PyBytes_AS_STRING(second), n2);
    if (outcome < 0) {
        return collect(outcome);
    }
    return PyBool_FromLong(outcome == 0);
}

static PyMethodDef methods[] = {
    {"call_tool", call_tool, METH_VARARGS, "Calls a host tool: (name, args JSON) -> bytes."},
    {"http_request", http_request, METH_VARARGS, "Sends an HTTP request through the host."},
    {"artifact", artifact, METH_VARARGS, "Adds an artifact to the run report."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_wasmagent_host", "The wasmagent host's imports.", -1, methods};

static PyObject *init_module(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    host_error = PyErr_NewExceptionWithDoc("_wasmagent_host.HostError", "The host refused or failed a call.", NULL, NULL);
    if (host_error == NULL || PyModule_AddObjectRef(m, "HostError", host_error) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

__attribute__((export_name("wizer-initialize"))) void wizer_initialize(void) {
    if (PyImport_AppendInittab("_wasmagent_host", init_module) != 0) {
        abort();
    }
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.write_bytecode = 0;
    config.install_signal_handlers = 0;
    PyStatus status = PyConfig_SetString(&config, &config.home, L"/");
    if (!PyStatus_Exception(status)) {
        status = PyWideStringList_Append(&config.module_search_paths, L"/guest");
    }
    if (!PyStatus_Exception(status)) {
        status = PyWideStringList_Append(&config.module_search_paths, L"/lib/python3.13");
    }
    if (!PyStatus_Exception(status)) {
        config.module_search_paths_set = 1;
        status = Py_InitializeFromConfig(&config);
    }
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        Py_ExitStatusException(status);
    }
    PyObject *runner = PyImport_ImportModule("runner");
    entry = runner == NULL ? NULL : PyObject_GetAttrString(runner, "_entry");
    if (entry == NULL) {
        PyErr_Print();
        abort();
    }
    /* Every object of the snapshot made immortal (`runner._snapshot_objects` says why). */
    PyObject *objects = PyObject_CallMethod(runner, "_snapshot_objects", NULL);
    if (objects == NULL || !PyList_Check(objects)) {
        PyErr_Print();
        abort();
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objects); i++) {
        Py_SET_REFCNT(PyList_GET_ITEM(objects, i), _Py_IMMORTAL_REFCNT);
    }
    Py_DECREF(objects);
    Py_DECREF(runner);
    /* A run sees its own preopened directories and environment, found again on first use. */
    __wasilibc_reset_preopens();
    __wasilibc_deinitialize_environ();
}

__attribute__((export_name("wasmagent-freeze"))) void wasmagent_freeze(void) {
    PyObject *runner = PyImport_ImportModule("runner");
    PyObject *frozen = runner == NULL ? NULL : PyObject_CallMethod(runner, "_freeze", NULL);
    if (frozen == NULL) {
        PyErr_Print();
        abort();
    }
    Py_DECREF(frozen);
    Py_DECREF(runner);
    __wasilibc_reset_preopens();
    __wasilibc_deinitialize_environ();
}

__attribute__((export_name("wasmagent_alloc"))) char *wasmagent_alloc(uint32_t len) {
    char *buffer = malloc(len ? len : 1);
    if (buffer == NULL) {
        abort();
    }
    return buffer;
}

/* The answer when `runner._entry` itself failed (it reports the program's own failures as answers). */
static const char internal_failure[] = "{\"error\":{\"kind\":\"internal\",\"message\":\"the Python engine failed\"}}";

__attribute__((export_name("wasmagent_run"))) void wasmagent_run(char *request, uint32_t len) {
    PyObject *text = PyUnicode_DecodeUTF8(request, len, "strict");
    free(request);
    PyObject *answer = text == NULL ? NULL : PyObject_CallOneArg(entry, text);
    Py_XDECREF(text);
    Py_ssize_t answer_len;
    const char *bytes = answer == NULL ? NULL : PyUnicode_AsUTF8AndSize(answer, &answer_len);
    if (bytes == NULL) {
        PyErr_Clear();
        host_result(internal_failure, sizeof internal_failure - 1);
    } else {
        host_result(bytes, (int32_t)answer_len);
    }
    Py_XDECREF(answer);
}
