// Non-variadic wrappers around variadic libc calls. Each returns the result, or -errno.
#define _GNU_SOURCE
#include "CKVM.h"
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

int lg_ioctl(int fd, unsigned long request) {
    int r;
    do { r = ioctl(fd, request, 0UL); } while (r < 0 && errno == EINTR && request != KVM_RUN);
    return r < 0 ? -errno : r;
}

int lg_ioctl_value(int fd, unsigned long request, unsigned long value) {
    int r;
    do { r = ioctl(fd, request, value); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

int lg_ioctl_pointer(int fd, unsigned long request, void *argument) {
    int r;
    do { r = ioctl(fd, request, argument); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

int lg_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5) {
    int r = prctl(option, a2, a3, a4, a5);
    return r < 0 ? -errno : r;
}

long lg_seccomp_set_filter(unsigned int flags, const struct sock_fprog *program) {
    long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, program);
    return r < 0 ? -errno : r;
}

long lg_capget(struct __user_cap_header_struct *header, struct __user_cap_data_struct *data) {
    long r = syscall(SYS_capget, header, data);
    return r < 0 ? -errno : r;
}

long lg_capset(struct __user_cap_header_struct *header, const struct __user_cap_data_struct *data) {
    long r = syscall(SYS_capset, header, data);
    return r < 0 ? -errno : r;
}

long lg_gettid(void) { return syscall(SYS_gettid); }

long lg_raw_syscall0(long number) {
    long r = syscall(number);
    return r < 0 ? -errno : r;
}

int lg_open(const char *path, int flags, unsigned int mode) {
    int r;
    do { r = open(path, flags, mode); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

int lg_set_thread_name(pthread_t thread, const char *name) {
    return pthread_setname_np(thread, name);
}

int lg_fallocate(int fd, int mode, long long offset, long long length) {
    int r = fallocate(fd, mode, (off_t)offset, (off_t)length);
    return r < 0 ? -errno : r;
}

struct lg_open_how {
    unsigned long long flags;
    unsigned long long mode;
    unsigned long long resolve;
};

int lg_openat2(int dirfd, const char *path, unsigned long long flags, unsigned long long mode,
               unsigned long long resolve) {
    struct lg_open_how how = { flags, mode, resolve };
    long r;
    do { r = syscall(SYS_openat2, dirfd, path, &how, sizeof how); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : (int)r;
}

int lg_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    long r;
    do { r = syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : (int)r;
}

long lg_getdents64(int fd, void *buffer, size_t count) {
    long r;
    do { r = syscall(SYS_getdents64, fd, buffer, count); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

int lg_set_malloc_trim_threshold(int bytes) { return mallopt(M_TRIM_THRESHOLD, bytes); }

int lg_accept4(int fd, int flags) {
    int r = accept4(fd, NULL, NULL, flags);
    return r < 0 ? -errno : r;
}

int lg_kick_signal(void) { return SIGRTMIN + 2; }

static void lg_kick_handler(int signal) { (void)signal; }

int lg_install_kick_handler(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = lg_kick_handler;
    sigemptyset(&action.sa_mask);
    // No SA_RESTART: a kicked thread's blocking call returns EINTR, which is the point.
    return sigaction(lg_kick_signal(), &action, NULL) < 0 ? -errno : 0;
}

// The process's arguments, as the C runtime hands them to every constructor. Swift's
// CommandLine reads them from /proc/self/cmdline, which a chroot without /proc (a jail) lacks.
static int lg_saved_argc;
static char **lg_saved_argv;

__attribute__((constructor)) static void lg_save_arguments(int argc, char **argv, char **envp) {
    (void)envp;
    lg_saved_argc = argc;
    lg_saved_argv = argv;
}

int lg_argc(void) { return lg_saved_argc; }
char **lg_argv(void) { return lg_saved_argv; }

// The jailer's calls that glibc does not wrap (or wraps variadically).
int lg_pivot_root(const char *new_root, const char *put_old) {
    long r = syscall(SYS_pivot_root, new_root, put_old);
    return r < 0 ? -errno : 0;
}

int lg_close_range(unsigned int first, unsigned int last) {
    long r = syscall(SYS_close_range, first, last, 0);
    return r < 0 ? -errno : 0;
}

pid_t lg_fork(void) {
    pid_t r = fork();
    return r < 0 ? -errno : r;
}

int lg_unshare(int flags) { return unshare(flags) < 0 ? -errno : 0; }
int lg_setns(int fd, int type) { return setns(fd, type) < 0 ? -errno : 0; }
