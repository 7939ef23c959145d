/*
 * outb PORT VALUE: writes one byte to an x86 I/O port, for the lab's guests.
 *
 * The boot timer (0x440) and the power registers are I/O ports, and the Debian cloud kernel
 * the lab boots has no /dev/port, so a guest's /init needs a program for it. This one takes
 * ioperm() for the one port and executes `out`. It is built static and without libc
 * (lab.sh compiles it into each guest initramfs), so it starts in microseconds and adds a few
 * kilobytes. PORT and VALUE are decimal or 0x-prefixed hexadecimal.
 */

static long syscall3(long number, long a, long b, long c)
{
    long result;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return result;
}

enum { SYS_write = 1, SYS_ioperm = 173, SYS_exit_group = 231 };

static void fail(const char *message, long length)
{
    syscall3(SYS_write, 2, (long)message, length);
    syscall3(SYS_exit_group, 1, 0, 0);
}

/* Decimal or 0x-hex; -1 for anything else or anything over 0xFFFF. */
static long parse(const char *text)
{
    long value = 0, base = 10, digits = 0;
    if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        base = 16;
        text += 2;
    }
    for (; *text; text++, digits++) {
        char c = *text;
        long digit;
        if (c >= '0' && c <= '9')
            digit = c - '0';
        else if (base == 16 && c >= 'a' && c <= 'f')
            digit = c - 'a' + 10;
        else if (base == 16 && c >= 'A' && c <= 'F')
            digit = c - 'A' + 10;
        else
            return -1;
        if (digit >= base)
            return -1;
        value = value * base + digit;
        if (value > 0xFFFF)
            return -1;
    }
    return digits ? value : -1;
}

void outb_main(long *stack)
{
    static const char usage[] = "usage: outb PORT VALUE\n";
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    if (argc != 3)
        fail(usage, sizeof usage - 1);
    long port = parse(argv[1]), value = parse(argv[2]);
    if (port < 0 || value < 0 || value > 0xFF)
        fail(usage, sizeof usage - 1);
    if (syscall3(SYS_ioperm, port, 1, 1) != 0) {
        static const char denied[] = "outb: ioperm failed\n";
        fail(denied, sizeof denied - 1);
    }
    __asm__ volatile("outb %b0, %w1" : : "a"(value), "Nd"(port));
    syscall3(SYS_exit_group, 0, 0, 0);
}

/* The kernel starts us with argc at the stack pointer; keep the ABI's 16-byte alignment. */
__asm__(".globl _start\n"
        "_start:\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call outb_main\n"
        "    hlt\n");
