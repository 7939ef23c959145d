#!/usr/bin/env python3
"""Drives lguest with firecracker-python, a Firecracker client from PyPI, used unchanged.

The client starts `/usr/local/bin/firecracker --api-sock PATH --id ID --log-path FILE` (its
MicroVMConfig.binary_path), keeps its VMs under /var/lib/firecracker, makes a TAP device and
nftables NAT rules for each, and talks to the API socket. Tests/ApiTests/FirecrackerPythonTests.swift
runs this script in a mount and network namespace of its own, where /usr/local/bin/firecracker is
lguest, /var/lib is an empty tmpfs, and a dummy `eth0` holds the default route, so nothing of the
host is touched and no packet leaves the namespace.

Two things of the client are replaced, neither on the way to the VMM:
  - docker.from_env: MicroVM() connects to a Docker daemon, used only to build a root file system
    from an image (not done here); there is no daemon in the test.
  - get_public_ip: MicroVM() asks three public web services for the host's address, used only
    for port forwarding (not done here); the test must not reach out to the Internet.

The guest (--kernel) is a tiny one that prints "hi" and then a "." every few milliseconds on the
serial console, which lguest writes to its standard output, which the client sends to
<data>/<id>/firecracker.log. The script checks what the client says and what the guest did:
created, configured as asked, running and printing; paused (the console stops growing);
resumed (it grows again); deleted (lguest ends, and its socket is gone).

    firecracker-python-check.py --kernel GUEST.elf --rootfs FILE
Prints one line per step; exits 0 if every step did what it should, 1 at the first that did not.
"""
import argparse
import json
import os
import sys
import threading
import time

import docker

docker.from_env = lambda *args, **kwargs: None  # no Docker daemon here, and no image to build

import firecracker.microvm as microvm_module  # noqa: E402

microvm_module.get_public_ip = lambda *args, **kwargs: "127.0.0.1"  # no Internet here

from firecracker import MicroVM  # noqa: E402
from firecracker.config import MicroVMConfig  # noqa: E402
from firecracker.vmm import VMMManager  # noqa: E402


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def ok(message):
    print(f"ok: {message}", flush=True)


def expect(condition, message):
    if not condition:
        fail(message)
    ok(message)


def wait_for(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", required=True)
    parser.add_argument("--rootfs", required=True)
    options = parser.parse_args()
    data = MicroVMConfig().data_path

    vm = MicroVM(kernel_file=options.kernel, base_rootfs=options.rootfs, vcpu=1, memory=128)
    started = time.monotonic()
    created = vm.create()
    print(f"create(): {created!r} in {time.monotonic() - started:.1f} s", flush=True)
    expect(created.startswith("VMM ") and created.endswith(" created"), "create() started the VM")

    listed = MicroVM.list()
    expect(len(listed) == 1, f"MicroVM.list() shows one VM: {listed}")
    vm_id, pid = listed[0]["id"], listed[0]["pid"]

    # The client does not wait for its child; reap it here (as init would once a client exits),
    # so that a stopped lguest does not linger as a zombie and its status is known.
    ended = {}

    def reap():
        try:
            _, status = os.waitpid(pid, 0)
            ended["status"] = status
        except ChildProcessError:
            ended["status"] = None

    threading.Thread(target=reap, daemon=True).start()

    manager = VMMManager()
    expect(manager.get_vmm_state(vm_id) == "Running", "GET / says Running")

    config = vm.config()
    print(f"GET /vm/config: {json.dumps(config, sort_keys=True)}", flush=True)
    machine = config.get("machine-config") or {}
    expect(machine.get("vcpu_count") == 1 and machine.get("mem_size_mib") == 128, "machine-config is 1 vCPU, 128 MiB")
    boot = config.get("boot-source") or {}
    expect(boot.get("kernel_image_path") == options.kernel, "boot-source is the kernel given")
    expect("console=ttyS0" in (boot.get("boot_args") or ""), "boot_args are the client's")
    drives = config.get("drives") or []
    expect(len(drives) == 1 and drives[0].get("drive_id") == "rootfs" and drives[0].get("is_root_device") is True,
           "one root drive, rootfs")
    interfaces = config.get("network-interfaces") or []
    expect(len(interfaces) == 1 and interfaces[0].get("host_dev_name") == f"tap_{vm_id}",
           f"one network interface on tap_{vm_id}")

    console = f"{data}/{vm_id}/firecracker.log"
    expect(wait_for(lambda: size(console) > 10, 10), "the guest writes to the console")
    with open(console, "rb") as file:
        text = file.read()
    expect(b"hi\n" in text, "the guest's console shows its greeting")

    expect(vm.pause() == f"VMM {vm_id} paused successfully", "pause() says it paused")
    expect(manager.get_vmm_state(vm_id) == "Paused", "GET / says Paused")
    time.sleep(0.3)  # output already on its way
    frozen = size(console)
    time.sleep(1.0)
    expect(size(console) == frozen, f"the console stays at {frozen} bytes while paused")

    expect(vm.resume() == f"VMM {vm_id} resumed successfully", "resume() says it resumed")
    expect(manager.get_vmm_state(vm_id) == "Running", "GET / says Running again")
    expect(wait_for(lambda: size(console) > frozen, 5), "the console grows again after resuming")

    log = f"{data}/{vm_id}/logs/{vm_id}.log"
    with open(log, "r", errors="replace") as file:
        lines = file.read()
    expect("Running Firecracker v" in lines and "API server started." in lines, "lguest's log (--log-path) has Firecracker's start lines")
    expect('request on "/actions"' in lines, "lguest's log shows the API requests")

    socket_path = f"{data}/{vm_id}/firecracker.socket"
    deleted = vm.delete()
    print(f"delete(): {deleted!r}", flush=True)
    expect(deleted == f"VMM {vm_id} is deleted", "delete() stopped the VM")
    expect(wait_for(lambda: "status" in ended, 10), "lguest has ended")
    status = ended["status"]
    print(f"lguest's wait status: {status}", flush=True)
    expect(not os.path.exists(socket_path), "the API socket is gone")
    expect(MicroVM.list() == [], "MicroVM.list() is empty")
    print("all steps passed", flush=True)


if __name__ == "__main__":
    main()
