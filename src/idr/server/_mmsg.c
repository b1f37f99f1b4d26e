/* Bursts of UDP datagrams in one system call each way (recvmmsg, sendmmsg), for
 * idr.server.udp.DrainedSocket on IPv4 sockets. Python's socket module offers one
 * datagram per call; this is the piece it does not have. No state beyond two address
 * caches; every buffer is per call. The GIL is held throughout: the socket is
 * non-blocking, so no call waits. */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_BURST 64
#define SLOT 65536 /* any UDP datagram whole: the largest payload is 65,507 bytes */
#define MAX_CACHED 4096

static char *slots; /* MAX_BURST slots of SLOT bytes: untouched pages cost no memory */
static PyObject *peers;  /* packed IPv4 address and port (int) -> (host, port) */
static PyObject *places; /* (host, port) -> struct sockaddr_in as bytes */

static PyObject *peer_of(const struct sockaddr_in *sa) {
    unsigned long long packed = ((unsigned long long)sa->sin_addr.s_addr << 16) | sa->sin_port;
    PyObject *key = PyLong_FromUnsignedLongLong(packed);
    if (key == NULL)
        return NULL;
    PyObject *peer = PyDict_GetItemWithError(peers, key);
    if (peer != NULL) {
        Py_DECREF(key);
        return Py_NewRef(peer);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa->sin_addr, host, sizeof host);
    peer = Py_BuildValue("(si)", host, (int)ntohs(sa->sin_port));
    if (peer == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    if (PyDict_GET_SIZE(peers) >= MAX_CACHED)
        PyDict_Clear(peers);
    int failed = PyDict_SetItem(peers, key, peer);
    Py_DECREF(key);
    if (failed) {
        Py_DECREF(peer);
        return NULL;
    }
    return peer;
}

/* recv_burst(fd, count) -> list of (bytes, (host, port)); empty when none is waiting. */
static PyObject *recv_burst(PyObject *Py_UNUSED(self), PyObject *args) {
    int fd, count;
    if (!PyArg_ParseTuple(args, "ii", &fd, &count))
        return NULL;
    if (count < 1 || count > MAX_BURST) {
        PyErr_SetString(PyExc_ValueError, "count out of range");
        return NULL;
    }
    struct mmsghdr msgs[MAX_BURST];
    struct iovec iov[MAX_BURST];
    struct sockaddr_in addrs[MAX_BURST];
    memset(msgs, 0, sizeof(struct mmsghdr) * count);
    for (int i = 0; i < count; i++) {
        iov[i].iov_base = slots + (size_t)i * SLOT;
        iov[i].iov_len = SLOT;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &addrs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
    }
    int got = recvmmsg(fd, msgs, (unsigned)count, MSG_DONTWAIT, NULL);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(got);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < got; i++) {
        PyObject *data = PyBytes_FromStringAndSize(iov[i].iov_base, msgs[i].msg_len);
        PyObject *peer = data ? peer_of(&addrs[i]) : NULL;
        PyObject *item = peer ? PyTuple_Pack(2, data, peer) : NULL;
        Py_XDECREF(data);
        Py_XDECREF(peer);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

/* The sockaddr of a (host, port) pair, cached: NULL with ValueError for anything but a
 * numeric IPv4 address (the caller then sends that answer itself). */
static PyObject *place_of(PyObject *peer) {
    PyObject *place = PyTuple_Check(peer) ? PyDict_GetItemWithError(places, peer) : NULL;
    if (place != NULL)
        return place; /* borrowed */
    PyErr_Clear(); /* e.g. unhashable: not an address this cache knows either */
    const char *host;
    int port;
    if (!PyTuple_Check(peer) || !PyArg_ParseTuple(peer, "si", &host, &port)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "not an IPv4 (host, port) pair");
        return NULL;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (port < 0 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        PyErr_SetString(PyExc_ValueError, "not a numeric IPv4 address");
        return NULL;
    }
    place = PyBytes_FromStringAndSize((const char *)&sa, sizeof sa);
    if (place == NULL)
        return NULL;
    if (PyDict_GET_SIZE(places) >= MAX_CACHED)
        PyDict_Clear(places);
    int failed = PyDict_SetItem(places, peer, place);
    Py_DECREF(place); /* the cache holds it */
    return failed ? NULL : place;
}

/* send_burst(fd, items, start) -> how many of items[start:] (each (data, (host, port)),
 * at most 64) were sent, at least one; raises OSError (the first one's error) when none
 * was, ValueError when the first one's address is not IPv4. */
static PyObject *send_burst(PyObject *Py_UNUSED(self), PyObject *args) {
    int fd;
    PyObject *items;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "iO!n", &fd, &PyList_Type, &items, &start))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items) - start;
    if (start < 0 || n < 1) {
        PyErr_SetString(PyExc_ValueError, "nothing to send");
        return NULL;
    }
    if (n > MAX_BURST)
        n = MAX_BURST;
    struct mmsghdr msgs[MAX_BURST];
    struct iovec iov[MAX_BURST];
    Py_buffer views[MAX_BURST];
    PyObject *kept[MAX_BURST]; /* each item's address, held: a cache clear must not free it */
    int held = 0; /* views[0:held] and kept[0:held] to release */
    memset(msgs, 0, sizeof(struct mmsghdr) * n);
    Py_ssize_t ready = 0;
    for (; ready < n; ready++) {
        PyObject *item = PyList_GET_ITEM(items, start + ready);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2)
            break;
        PyObject *place = place_of(PyTuple_GET_ITEM(item, 1));
        if (place == NULL)
            break;
        kept[held] = Py_NewRef(place);
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(item, 0), &views[held], PyBUF_SIMPLE) < 0) {
            Py_DECREF(kept[held]);
            break;
        }
        held++;
        iov[ready].iov_base = views[ready].buf;
        iov[ready].iov_len = (size_t)views[ready].len;
        msgs[ready].msg_hdr.msg_iov = &iov[ready];
        msgs[ready].msg_hdr.msg_iovlen = 1;
        msgs[ready].msg_hdr.msg_name = PyBytes_AS_STRING(place);
        msgs[ready].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
    }
    PyObject *result = NULL;
    if (ready == 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "not a (data, (host, port)) pair");
    } else {
        PyErr_Clear(); /* an item after the first that could not be prepared: sent next call */
        int sent = sendmmsg(fd, msgs, (unsigned)ready, MSG_DONTWAIT);
        if (sent < 0)
            PyErr_SetFromErrno(PyExc_OSError);
        else
            result = PyLong_FromLong(sent);
    }
    for (int i = 0; i < held; i++) {
        PyBuffer_Release(&views[i]);
        Py_DECREF(kept[i]);
    }
    return result;
}

static PyMethodDef methods[] = {
    {"recv_burst", recv_burst, METH_VARARGS, "recv_burst(fd, count) -> [(data, (host, port)), ...]"},
    {"send_burst", send_burst, METH_VARARGS, "send_burst(fd, items, start) -> how many were sent"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mmsg", "UDP bursts in one system call each way (Linux).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__mmsg(void) {
    slots = PyMem_RawMalloc((size_t)MAX_BURST * SLOT);
    peers = PyDict_New();
    places = PyDict_New();
    if (slots == NULL || peers == NULL || places == NULL)
        return PyErr_NoMemory();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_BURST", MAX_BURST) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
