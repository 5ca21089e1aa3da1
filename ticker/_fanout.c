/* One frame written to many sockets, without the GIL.
 *
 * The broadcast's raw writes in Python take the GIL back after every os.write(), so the
 * threads that share a broadcast queue for it between sends. Here the loop over the sockets
 * runs with the GIL released: the threads' kernel work overlaps fully. Optional: when this
 * module is not built (no C compiler), ticker.server writes from Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <unistd.h>

PyDoc_STRVAR(write_all_doc,
"write_all(fds, frame) -> list[tuple[int, int]]\n\n"
"Write `frame` (bytes) to each file descriptor in `fds` (an array('i')), in order.\n"
"Returns (index, written) for each one that did not take the whole frame: written is\n"
"the bytes it took (0 when it would block), or -1 after another error (reset, closed).");

static PyObject *
write_all(PyObject *module, PyObject *args)
{
    Py_buffer fds, frame;
    PyObject *short_writes = NULL;
    ssize_t *written = NULL;
    if (!PyArg_ParseTuple(args, "y*y*:write_all", &fds, &frame))
        return NULL;
    const int *fd = fds.buf;
    Py_ssize_t n = fds.len / (Py_ssize_t)sizeof(int);
    if (fds.itemsize != (Py_ssize_t)sizeof(int)) {
        PyErr_SetString(PyExc_TypeError, "write_all: fds must be an array('i')");
        goto done;
    }
    written = PyMem_Malloc((n ? n : 1) * sizeof(ssize_t));
    if (written == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        ssize_t r = write(fd[i], frame.buf, (size_t)frame.len);
        written[i] = r >= 0 ? r : (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
    }
    Py_END_ALLOW_THREADS
    short_writes = PyList_New(0);
    for (Py_ssize_t i = 0; short_writes != NULL && i < n; i++) {
        if (written[i] == frame.len)
            continue;
        PyObject *item = Py_BuildValue("(nn)", i, (Py_ssize_t)written[i]);
        if (item == NULL || PyList_Append(short_writes, item) < 0)
            Py_CLEAR(short_writes);
        Py_XDECREF(item);
    }
done:
    PyMem_Free(written);
    PyBuffer_Release(&fds);
    PyBuffer_Release(&frame);
    return short_writes;
}

static PyMethodDef methods[] = {
    {"write_all", write_all, METH_VARARGS, write_all_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ticker._fanout", "Raw socket writes without the GIL.", -1, methods,
};

PyMODINIT_FUNC
PyInit__fanout(void)
{
    return PyModule_Create(&module);
}
