/*
 * mmio-attack SEED SECONDS SCRATCH_BASE SCRATCH_SIZE WINDOW...: a hostile guest program for
 * the lab. It maps virtio-mmio windows through /dev/mem (the kernel booted with iomem=relaxed,
 * the windows' drivers unbound) and, for SECONDS, does to them what no honest driver would:
 *
 *   - writes random values of random widths (1, 2, 4, 8 bytes) to random offsets of a window,
 *     registers and configuration space alike;
 *   - walks a device through the status handshake with random features, queue sizes (powers of
 *     two or not) and ring addresses, sometimes skipping or reordering steps;
 *   - fills descriptor tables with random descriptors (random flags: NEXT, WRITE, INDIRECT;
 *     random lengths and next indices, loops included), indirect tables the same, random avail
 *     indices, and kicks the queue through QueueNotify.
 *
 * Buffers the device reads point anywhere: inside RAM, past its end, at the windows themselves,
 * at 64-bit addresses that wrap. Buffers the device writes (and the used ring, and every
 * descriptor table) lie in SCRATCH, memory the kernel was told to leave alone (memmap=SIZE$BASE):
 * a device that writes where the guest asked is doing its job, and a write into the guest's own
 * kernel would crash the guest, which proves nothing about the VMM.
 *
 * The seed is printed first, so a failure can be replayed. Exit status 0 when the time is up.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { WINDOW = 0x1000, MAX_WINDOWS = 8 };

static uint64_t state;
static uint64_t next(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}
static uint64_t below(uint64_t n) { return n ? next() % n : 0; }

static volatile uint8_t *windows[MAX_WINDOWS];
static int window_count;
static volatile uint8_t *scratch;
static uint64_t scratch_base, scratch_size;

static void put(volatile uint8_t *w, uint64_t offset, int width, uint64_t value)
{
    offset &= WINDOW - 1;
    offset &= ~(uint64_t)(width - 1);
    switch (width) {
    case 1: *(volatile uint8_t *)(w + offset) = (uint8_t)value; break;
    case 2: *(volatile uint16_t *)(w + offset) = (uint16_t)value; break;
    case 4: *(volatile uint32_t *)(w + offset) = (uint32_t)value; break;
    default: *(volatile uint64_t *)(w + (offset & ~7ull)) = value; break;
    }
}
static void reg(volatile uint8_t *w, uint64_t offset, uint32_t value) { put(w, offset, 4, value); }
static uint32_t get(volatile uint8_t *w, uint64_t offset) { return *(volatile uint32_t *)(w + offset); }

/* A guest-physical address in SCRATCH, aligned to `align`, with `room` bytes after it. */
static uint64_t in_scratch(uint64_t align, uint64_t room)
{
    uint64_t offset = below(scratch_size - room) & ~(align - 1);
    return scratch_base + offset;
}
/* An address the device may only read: anywhere at all, most often somewhere plausible. */
static uint64_t anywhere(void)
{
    switch (below(6)) {
    case 0: return next();                                  /* any 64 bits */
    case 1: return 0xD0000000ull + below(0x10000);          /* the MMIO windows */
    case 2: return ~0ull - below(0x10000);                  /* wraps */
    case 3: return below(1ull << 32);                       /* below 4 GiB */
    default: return in_scratch(1, 0x10000);
    }
}

static void random_descriptors(uint64_t table, unsigned count)
{
    volatile uint8_t *t = scratch + (table - scratch_base);
    for (unsigned i = 0; i < count; i++) {
        uint16_t flags = (uint16_t)(next() & 7); /* NEXT 1, WRITE 2, INDIRECT 4 */
        uint64_t addr;
        uint32_t len = below(4) ? (uint32_t)below(70000) : (uint32_t)next();
        if (flags & 4) { /* an indirect table: in scratch, filled too (once, shallowly) */
            len = (uint32_t)(16 * (1 + below(64)));
            addr = in_scratch(16, len);
            if (below(2)) {
                volatile uint8_t *inner = scratch + (addr - scratch_base);
                for (uint32_t j = 0; j < len / 16; j++) {
                    uint16_t f = (uint16_t)(next() & 7);
                    uint32_t l = (uint32_t)below(70000);
                    uint64_t a = (f & 2) ? in_scratch(1, 70000) : anywhere();
                    *(volatile uint64_t *)(inner + 16 * j) = a;
                    *(volatile uint32_t *)(inner + 16 * j + 8) = l;
                    *(volatile uint16_t *)(inner + 16 * j + 12) = f;
                    *(volatile uint16_t *)(inner + 16 * j + 14) = (uint16_t)below(len / 16 + 2);
                }
            }
        } else if (flags & 2) {
            if (len > 65536) len = (uint32_t)below(65536);
            addr = in_scratch(1, 70000);
        } else {
            addr = anywhere();
        }
        *(volatile uint64_t *)(t + 16 * i) = addr;
        *(volatile uint32_t *)(t + 16 * i + 8) = len;
        *(volatile uint16_t *)(t + 16 * i + 12) = flags;
        *(volatile uint16_t *)(t + 16 * i + 14) = (uint16_t)(below(8) ? below(count) : next());
    }
}

struct queue { uint64_t desc, avail, used; unsigned size; uint16_t idx; };
static struct queue queues[MAX_WINDOWS][4];

/* The handshake, mostly in order: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK. */
static void setup(int n)
{
    volatile uint8_t *w = windows[n];
    reg(w, 0x070, 0);
    reg(w, 0x070, 1);
    reg(w, 0x070, 3);
    for (int sel = 0; sel < 2; sel++) {
        reg(w, 0x024, sel);
        reg(w, 0x020, sel == 1 ? (below(4) ? 1 : (uint32_t)next()) : (uint32_t)next());
    }
    if (below(8)) reg(w, 0x070, 0xB);
    for (int q = 0; q < 4; q++) {
        struct queue *qu = &queues[n][q];
        reg(w, 0x030, q);
        uint32_t max = get(w, 0x034);
        unsigned size = max ? (unsigned)(1u << below(9)) : 0;
        if (size > max) size = max;
        if (!below(10)) size = (unsigned)below(70000);
        qu->size = size ? size : 1;
        if (qu->size > 1024) qu->size = 1024;
        qu->desc = in_scratch(16, 16 * 1024);
        qu->used = in_scratch(4, 8 * 1024 + 8);
        qu->avail = below(4) ? in_scratch(2, 2 * 1024 + 8) : anywhere();
        qu->idx = 0;
        reg(w, 0x038, size);
        reg(w, 0x080, (uint32_t)qu->desc); reg(w, 0x084, (uint32_t)(qu->desc >> 32));
        reg(w, 0x090, (uint32_t)qu->avail); reg(w, 0x094, (uint32_t)(qu->avail >> 32));
        reg(w, 0x0A0, (uint32_t)qu->used); reg(w, 0x0A4, (uint32_t)(qu->used >> 32));
        if (below(8)) reg(w, 0x044, 1);
    }
    if (below(8)) reg(w, 0x070, 0xF);
}

/* Random descriptors, a random number of them made available, then a kick. */
static void traffic(int n)
{
    volatile uint8_t *w = windows[n];
    int q = (int)below(4);
    struct queue *qu = &queues[n][q];
    if (!qu->size) return;
    random_descriptors(qu->desc, qu->size < 1024 ? qu->size : 1024);
    /* Only an avail ring in scratch is ours to fill (written so that no address wraps). */
    if (qu->avail >= scratch_base && qu->avail - scratch_base <= scratch_size - (2 * 1024 + 8)) {
        volatile uint8_t *a = scratch + (qu->avail - scratch_base);
        unsigned add = (unsigned)(below(8) ? below(qu->size + 1) : below(65536));
        for (unsigned i = 0; i < add && i < 1024; i++)
            *(volatile uint16_t *)(a + 4 + 2 * ((qu->idx + i) % (qu->size ? qu->size : 1) % 1024)) = (uint16_t)below(qu->size + 2);
        *(volatile uint16_t *)(a) = (uint16_t)(below(4) ? 0 : next());
        qu->idx = (uint16_t)(qu->idx + add);
        *(volatile uint16_t *)(a + 2) = qu->idx;
    }
    reg(w, 0x050, below(8) ? (uint32_t)q : (uint32_t)next());
}

static void noise(int n)
{
    static const int widths[] = { 1, 2, 4, 8 };
    uint64_t offset = below(4) ? below(0x100) : below(WINDOW);
    uint64_t value = below(2) ? below(16) : next();
    put(windows[n], offset, widths[below(4)], value);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: mmio-attack SEED SECONDS SCRATCH_BASE SCRATCH_SIZE WINDOW...\n");
        return 2;
    }
    state = strtoull(argv[1], NULL, 0);
    if (!state) state = 0x9E3779B97F4A7C15ull;
    double seconds = strtod(argv[2], NULL);
    scratch_base = strtoull(argv[3], NULL, 0);
    scratch_size = strtoull(argv[4], NULL, 0);
    printf("mmio-attack seed=%s seconds=%s scratch=%#llx+%#llx windows=%d\n", argv[1], argv[2],
           (unsigned long long)scratch_base, (unsigned long long)scratch_size, argc - 5);
    fflush(stdout);
    int mem = open("/dev/mem", O_RDWR | O_SYNC);
    if (mem < 0) { perror("mmio-attack: /dev/mem"); return 1; }
    scratch = mmap(NULL, scratch_size, PROT_READ | PROT_WRITE, MAP_SHARED, mem, (off_t)scratch_base);
    if (scratch == MAP_FAILED) { perror("mmio-attack: mapping the scratch memory"); return 1; }
    for (int i = 5; i < argc && window_count < MAX_WINDOWS; i++) {
        uint64_t base = strtoull(argv[i], NULL, 0);
        void *w = mmap(NULL, WINDOW, PROT_READ | PROT_WRITE, MAP_SHARED, mem, (off_t)base);
        if (w == MAP_FAILED) { perror("mmio-attack: mapping a window"); return 1; }
        windows[window_count++] = w;
    }
    unsigned long actions = 0;
    for (int n = 0; n < window_count; n++) setup(n);
    double end = now() + seconds;
    while (now() < end) {
        for (int k = 0; k < 64; k++, actions++) {
            int n = (int)below(window_count);
            switch (below(10)) {
            case 0: setup(n); break;
            case 1: case 2: case 3: case 4: case 5: traffic(n); break;
            default: noise(n); break;
            }
        }
    }
    /* Leave the devices reset, as a driver that lets go would. */
    for (int n = 0; n < window_count; n++) reg(windows[n], 0x070, 0);
    printf("mmio-attack done actions=%lu\n", actions);
    return 0;
}
