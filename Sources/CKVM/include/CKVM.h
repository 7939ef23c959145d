// CKVM: the only C in lguest.
//
// Swift imports <linux/kvm.h>'s structs and plain integer constants by itself. What it cannot
// reach lives here: the ioctl request numbers (function-like _IO/_IOW macros), flags built from
// enums, variadic calls (ioctl, prctl, syscall), and C11 atomics on memory we do not own (the
// guest's rings). Every wrapper returns the result or -errno, so Swift never reads a stale errno.
#ifndef CKVM_H
#define CKVM_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <linux/kvm.h>
#include <linux/if_tun.h>
#include <linux/seccomp.h>
#include <linux/filter.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/futex.h>
#include <linux/fs.h>
#include <linux/vhost.h>
#include <net/if.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/syscall.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <termios.h>
#include <pthread.h>
#include <signal.h>

// MARK: - ioctl request numbers (api.rst names each one)

static const unsigned long LG_KVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long LG_KVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long LG_KVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long LG_KVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long LG_KVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long LG_KVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long LG_KVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long LG_KVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long LG_KVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long LG_KVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long LG_KVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long LG_KVM_IRQFD = KVM_IRQFD;
static const unsigned long LG_KVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long LG_KVM_IOEVENTFD = KVM_IOEVENTFD;
static const unsigned long LG_KVM_RUN = KVM_RUN;
static const unsigned long LG_KVM_GET_REGS = KVM_GET_REGS;
static const unsigned long LG_KVM_SET_REGS = KVM_SET_REGS;
static const unsigned long LG_KVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long LG_KVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long LG_KVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long LG_KVM_SET_FPU = KVM_SET_FPU;
static const unsigned long LG_KVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long LG_KVM_SET_LAPIC = KVM_SET_LAPIC;
static const unsigned long LG_KVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long LG_KVM_SIGNAL_MSI = KVM_SIGNAL_MSI;
static const unsigned long LG_KVM_GET_CLOCK = KVM_GET_CLOCK;
static const unsigned long LG_KVM_SET_CLOCK = KVM_SET_CLOCK;
static const unsigned long LG_KVM_KVMCLOCK_CTRL = KVM_KVMCLOCK_CTRL;
// Saving and restoring a VM (Snapshot, Launcher/MachineSnapshot.swift).
static const unsigned long LG_KVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;
static const unsigned long LG_KVM_GET_MSRS = KVM_GET_MSRS;
static const unsigned long LG_KVM_GET_CPUID2 = KVM_GET_CPUID2;
static const unsigned long LG_KVM_GET_XSAVE = KVM_GET_XSAVE;
static const unsigned long LG_KVM_SET_XSAVE = KVM_SET_XSAVE;
static const unsigned long LG_KVM_GET_XCRS = KVM_GET_XCRS;
static const unsigned long LG_KVM_SET_XCRS = KVM_SET_XCRS;
static const unsigned long LG_KVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
static const unsigned long LG_KVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
static const unsigned long LG_KVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long LG_KVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long LG_KVM_GET_DEBUGREGS = KVM_GET_DEBUGREGS;
static const unsigned long LG_KVM_SET_DEBUGREGS = KVM_SET_DEBUGREGS;
static const unsigned long LG_KVM_GET_IRQCHIP = KVM_GET_IRQCHIP;
static const unsigned long LG_KVM_SET_IRQCHIP = KVM_SET_IRQCHIP;
static const unsigned long LG_KVM_GET_PIT2 = KVM_GET_PIT2;
static const unsigned long LG_KVM_SET_PIT2 = KVM_SET_PIT2;

// Flags Swift does not import (they are built from enum values).
static const uint32_t LG_KVM_IOEVENTFD_FLAG_DATAMATCH = KVM_IOEVENTFD_FLAG_DATAMATCH;
static const uint32_t LG_KVM_IOEVENTFD_FLAG_PIO = KVM_IOEVENTFD_FLAG_PIO;
static const uint32_t LG_KVM_IOEVENTFD_FLAG_DEASSIGN = KVM_IOEVENTFD_FLAG_DEASSIGN;

// Where the MMIO exit's data bytes sit in `kvm_run` (inside an anonymous union, which Swift's
// MemoryLayout.offset(of:) cannot see through).
static const size_t LG_KVM_RUN_MMIO_DATA_OFFSET = offsetof(struct kvm_run, mmio.data);

// timerfd flags (an enum in <bits/timerfd.h>).
static const int LG_TFD_NONBLOCK = TFD_NONBLOCK;
static const int LG_TFD_CLOEXEC = TFD_CLOEXEC;

// TAP (linux/if_tun.h): _IOW macros again.
static const unsigned long LG_TUNSETIFF = TUNSETIFF;
static const unsigned long LG_TUNSETOFFLOAD = TUNSETOFFLOAD;
static const unsigned long LG_TUNSETVNETHDRSZ = TUNSETVNETHDRSZ;
static const unsigned long LG_SIOCSIFADDR = SIOCSIFADDR;
static const unsigned long LG_SIOCSIFNETMASK = SIOCSIFNETMASK;
static const unsigned long LG_SIOCGIFFLAGS = SIOCGIFFLAGS;
static const unsigned long LG_SIOCSIFFLAGS = SIOCSIFFLAGS;

// vhost-net (linux/vhost.h): the kernel's virtio-net data path, set up by these ioctls.
static const unsigned long LG_VHOST_SET_OWNER = VHOST_SET_OWNER;
static const unsigned long LG_VHOST_GET_FEATURES = VHOST_GET_FEATURES;
static const unsigned long LG_VHOST_SET_FEATURES = VHOST_SET_FEATURES;
static const unsigned long LG_VHOST_SET_MEM_TABLE = VHOST_SET_MEM_TABLE;
static const unsigned long LG_VHOST_SET_VRING_NUM = VHOST_SET_VRING_NUM;
static const unsigned long LG_VHOST_SET_VRING_ADDR = VHOST_SET_VRING_ADDR;
static const unsigned long LG_VHOST_SET_VRING_BASE = VHOST_SET_VRING_BASE;
static const unsigned long LG_VHOST_GET_VRING_BASE = VHOST_GET_VRING_BASE;
static const unsigned long LG_VHOST_SET_VRING_KICK = VHOST_SET_VRING_KICK;
static const unsigned long LG_VHOST_SET_VRING_CALL = VHOST_SET_VRING_CALL;
static const unsigned long LG_VHOST_NET_SET_BACKEND = VHOST_NET_SET_BACKEND;

// Block devices (linux/fs.h): the size, the read-only flag, and a discard.
static const unsigned long LG_BLKGETSIZE64 = BLKGETSIZE64;
static const unsigned long LG_BLKROGET = BLKROGET;
static const unsigned long LG_BLKDISCARD = BLKDISCARD;

// MARK: - Seccomp and capabilities

/// The architecture a seccomp filter must see in `seccomp_data.arch` (built from other macros,
/// so Swift does not import it).
static const uint32_t LG_AUDIT_ARCH_X86_64 = AUDIT_ARCH_X86_64;

// MARK: - Variadic calls, made non-variadic. Each returns its result or -errno.

int lg_ioctl(int fd, unsigned long request);
int lg_ioctl_value(int fd, unsigned long request, unsigned long value);
int lg_ioctl_pointer(int fd, unsigned long request, void *argument);
int lg_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);
long lg_seccomp_set_filter(unsigned int flags, const struct sock_fprog *program);
/// capget(2) and capset(2), which glibc does not declare (libcap does). With pid 0 in the
/// header they read and set the calling thread's capabilities.
long lg_capget(struct __user_cap_header_struct *header, struct __user_cap_data_struct *data);
long lg_capset(struct __user_cap_header_struct *header, const struct __user_cap_data_struct *data);
long lg_gettid(void);
long lg_raw_syscall0(long number);
int lg_open(const char *path, int flags, unsigned int mode);
int lg_set_thread_name(pthread_t thread, const char *name);
/// The real-time signal that kicks a vCPU thread out of KVM_RUN (SIGRTMIN + 2, a macro Swift
/// cannot import), and the installation of its handler, which does nothing: the point is
/// only that KVM_RUN returns EINTR. Installing it again is harmless.
/// Shared directories (virtio-fs): `openat2(2)` with its `struct open_how` and RESOLVE_*
/// flags, `renameat2(2)` and `getdents64(2)`, which glibc 2.36 either lacks or declares only
/// under _GNU_SOURCE. Each returns its result or -errno and retries EINTR.
int lg_openat2(int dirfd, const char *path, unsigned long long flags, unsigned long long mode,
               unsigned long long resolve);
int lg_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
long lg_getdents64(int fd, void *buffer, size_t count);
static const unsigned long long LG_RESOLVE_NO_XDEV = 0x01;
static const unsigned long long LG_RESOLVE_NO_MAGICLINKS = 0x02;
static const unsigned long long LG_RESOLVE_NO_SYMLINKS = 0x04;
static const unsigned long long LG_RESOLVE_BENEATH = 0x08;
static const int LG_O_PATH = 010000000;
static const int LG_AT_EMPTY_PATH = 0x1000;
static const int LG_O_DIRECT = 040000;
static const int LG_O_NOATIME = 01000000;
static const long LG_UTIME_NOW = ((1l << 30) - 1l);
static const long LG_UTIME_OMIT = ((1l << 30) - 2l);
int lg_kick_signal(void);
/// The process's argc and argv, saved by a constructor before main: Swift's CommandLine reads
/// /proc/self/cmdline, which a jail without /proc does not have.
int lg_argc(void);
char **lg_argv(void);
int lg_install_kick_handler(void);
/// fallocate(2), which <fcntl.h> declares only under _GNU_SOURCE. Returns 0 or -errno.
int lg_fallocate(int fd, int mode, long long offset, long long length);
/// accept4(2) without the peer's address, which <sys/socket.h> declares only under
/// _GNU_SOURCE. Returns the new descriptor or -errno.
int lg_accept4(int fd, int flags);
/* The jailer: pivot_root(2), close_range(2), fork(2); each returns the result or -errno. */
int lg_pivot_root(const char *new_root, const char *put_old);
int lg_close_range(unsigned int first, unsigned int last);
pid_t lg_fork(void);
/* unshare(2) and setns(2), which glibc declares only for _GNU_SOURCE; the namespaces they take. */
int lg_unshare(int flags);
int lg_setns(int fd, int type);
static const int LG_CLONE_NEWNS = 0x00020000;
static const int LG_CLONE_NEWPID = 0x20000000;
static const int LG_CLONE_NEWNET = 0x40000000;
/// mallopt(M_TRIM_THRESHOLD, bytes): glibc's <malloc.h>, which Swift's Glibc module leaves out.
int lg_set_malloc_trim_threshold(int bytes);

// MARK: - Ordering on shared memory (the guest's virtqueues).
// On x86-64 acquire loads and release stores are plain moves; what matters is that the
// compiler may not move other accesses across them, which C11 atomics guarantee.

static inline uint16_t lg_load_acquire_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}
static inline void lg_store_release_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}
static inline uint32_t lg_load_acquire_u32(const void *p) {
    return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE);
}
static inline void lg_store_release_u32(void *p, uint32_t v) {
    __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE);
}
static inline void lg_store_relaxed_u8(void *p, uint8_t v) {
    __atomic_store_n((uint8_t *)p, v, __ATOMIC_RELAXED);
}
/// Relaxed loads, for ring fields and descriptors the guest may be writing while we read
/// (Linux's READ_ONCE, rust-vmm's `load(Ordering::Relaxed)`): no ordering, but the compiler
/// must load exactly once, never tear, repeat or merge the access. x86-64 loads of any
/// alignment inside a cache line are single moves.
static inline uint16_t lg_load_relaxed_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}
static inline uint64_t lg_load_relaxed_u64(const void *p) {
    return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
}
/// A full barrier: orders earlier stores before later loads (the one ordering x86 relaxes).
static inline void lg_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

#endif
