/*
 * vsock-duplex CID PORT: connects to vsock CID:PORT, sends its stdin and writes what comes back
 * to its stdout, both at once, for the lab's echo checks.
 *
 * Why not socat: socat moves both directions in one loop and blocks in write(). A vsock socket
 * polls writable with a single byte of credit, so socat's 8 KiB write can block while the echo
 * is waiting for it to read; once every buffer on the loop is full (the guest's receive
 * buffer, the device's backlog, the host socket, the echo's pipes) nothing moves again. That is
 * the client's deadlock, not the transport's. Here one process writes and another reads, as a
 * client streaming through an echo must.
 *
 * The writer shuts the socket for writing at the end of its input; the reader copies until end
 * of file. Exit status 0 when both finished, 1 otherwise, with one line on stderr.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int copy(int from, int to)
{
    static char buffer[65536];
    for (;;) {
        ssize_t n = read(from, buffer, sizeof buffer);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(to, buffer + done, (size_t)(n - done));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return -1;
            }
            done += w;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: vsock-duplex CID PORT <input >output\n");
        return 2;
    }
    struct sockaddr_vm address = {
        .svm_family = AF_VSOCK,
        .svm_cid = (unsigned)strtoul(argv[1], NULL, 10),
        .svm_port = (unsigned)strtoul(argv[2], NULL, 10),
    };
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&address, sizeof address) < 0) {
        fprintf(stderr, "vsock-duplex: connect %s:%s: %s\n", argv[1], argv[2], strerror(errno));
        return 1;
    }
    pid_t writer = fork();
    if (writer < 0) {
        perror("vsock-duplex: fork");
        return 1;
    }
    if (writer == 0) {
        int failed = copy(0, s);
        shutdown(s, SHUT_WR);
        if (failed)
            fprintf(stderr, "vsock-duplex: sending: %s\n", strerror(errno));
        _exit(failed ? 1 : 0);
    }
    int failed = copy(s, 1);
    if (failed)
        fprintf(stderr, "vsock-duplex: receiving: %s\n", strerror(errno));
    int status = 0;
    while (waitpid(writer, &status, 0) < 0 && errno == EINTR)
        ;
    return failed || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}
