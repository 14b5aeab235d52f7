#!/bin/bash
# tests/vm/rdma-vm.sh - LogMemcached's Soft-RoCE VM harness. Adapted from the
# recipe in ../shared/rdma-vm/ (see its README for the measured facts); this copy
# is the project's own so that the test command works from a clean clone.
#
# Runs a command inside a throw-away QEMU VM that has Soft-RoCE (rdma_rxe) verbs,
# using the HOST's own /usr and /etc (exported read-only over virtio-9p) as the
# guest userspace, so binaries built on the host run as-is.
#
#   rdma-vm.sh setup            # fetch Debian kernel + busybox, build initramfs
#                               # (done automatically by run/pair when missing)
#   rdma-vm.sh run CMD [ARG..]  # boot, create rxe0 on eth0 (10.0.2.15), run CMD in
#                               # the current directory, power off; exit status = CMD's
#   rdma-vm.sh deps             # only install the host packages that are missing
#
# Differences from the shared recipe:
#   - artifacts live in ~/.cache/logmemcached-vm (LOGMEMCACHED_VM_DIR or RDMA_VM_DIR);
#   - missing host packages are installed with apt-get (as root, or via sudo -n),
#     `setup` runs by itself when its artifacts are missing or stale;
#   - in the guest LOGMEMCACHED_IN_VM=1 is exported (VM-only tests check it) and
#     RDMA_VM_HUGEPAGES (default 16) 2 MiB huge pages are reserved, so regions
#     created with HugePages::Auto really are huge-page backed;
#   - default guest memory 1024 MiB.
#
# Works as a cargo runner:
#   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="/path/rdma-vm.sh run" cargo test
#
# Host needs (installed when missing): qemu-system-x86 (qemu-system-x86_64), kmod
# (modprobe/depmod), cpio, gzip, apt-get/dpkg-deb (to download two .debs), and at
# run time the RDMA userspace the guest will use: libibverbs1 + ibverbs-providers
# (librxe), iproute2 (`rdma`), ibverbs-utils, perftest.
# Env: RDMA_VM_DIR (artifacts), RDMA_VM_MEM (MiB, 1024),
#      RDMA_VM_SMP (2), RDMA_VM_ACCEL (auto|kvm|tcg), RDMA_VM_TIMEOUT (s, 1800),
#      RDMA_VM_SETUP (guest shell snippet run as root before CMD, after rxe0 is up),
#      RDMA_VM_HUGEPAGES (2 MiB pages reserved in the guest, 16),
#      LOGMEMCACHED_VM_NO_INSTALL=1 (never run apt-get; fail with the command instead).
#
#   rdma-vm.sh pair CMD_A [ARG..] -- CMD_B [ARG..]
# boots VM A and VM B at the same time, two "hosts" joined by a private Ethernet
# link (QEMU `-netdev socket,udp=...` over 127.0.0.1 UDP; no other NIC). The first
# literal `--` splits the two commands (a command that needs its own `--`: wrap it
# in `sh -c '...'`). In each VM eth0 is that link, A = 192.168.77.1/24,
# B = 192.168.77.2/24, rxe0 on eth0 (GID index 1 = ::ffff:<IP>); host /usr and
# /etc read-only as in `run`; the current directory read-write, the SAME one in
# both VMs (uncached 9p: exchange ready-files or results through it). The command
# runs there with RDMA_VM_SIDE (A|B), RDMA_VM_PEER (B|A), RDMA_VM_IP and
# RDMA_VM_PEER_IP set; RDMA_VM_SETUP runs in both VMs.
#   Power cut: a command in either VM runs `/ctl/kill-vm B` (or A, or peer =
#   the default); the host SIGKILLs that VM's qemu (by pid; only a qemu this script
#   started) and the helper returns once done, printing "killed B". Without the
#   helper: write B into /ctl/kill-request; the host polls it every 0.1 s and
#   answers in /ctl/kill-done. The survivor sees the link go silent. Note: rxe
#   retries forever when a QP's retry_cnt is 7 (ibv_rc_pingpong, perftest without
#   -R do that): use < 7 where the survivor must get an error completion.
#   Console: ./.rdma-vm-A.log and ./.rdma-vm-B.log (rewritten on each pair run),
#   printed on stdout after the run with `A|` / `B|` prefixes; one line per side
#   on stderr says how it ended.
#   Exit status: 0 if every command that ran to its end exited 0 and a VM killed
#   on request was the only other way a side ended (at least one side must exit
#   0); else 125 if a VM failed (no exit code: crash, qemu error, RDMA_VM_TIMEOUT),
#   else A's non-zero code, else B's. Once one side has failed, the other gets
#   RDMA_VM_PAIR_GRACE s (10) to end, then its VM is killed.
#   Env: RDMA_VM_PAIR_PORT (A's UDP port, B's is +1; default: a pair in
#   20000-29999 no socket uses, picked under the lock /tmp/rdma-vm-pair.lock so
#   pairs started at once never share one), RDMA_VM_PAIR_GRACE, and RDMA_VM_MEM,
#   RDMA_VM_SMP (each VM; default 1 in pair mode), RDMA_VM_TIMEOUT (whole pair).
set -euo pipefail
VMDIR=${LOGMEMCACHED_VM_DIR:-${RDMA_VM_DIR:-${HOME:-/root}/.cache/logmemcached-vm}}
SETUP_VERSION=2   # bump when the initramfs recipe below changes: forces a new setup
KPKG=${RDMA_VM_KPKG:-}          # e.g. linux-image-6.1.0-56-amd64; default: what linux-image-amd64 depends on

die() { echo "rdma-vm: $*" >&2; exit 125; }

# ------------------------------------------------------------ host packages
# command-or-file -> Debian package that provides it
HOST_NEEDS=(
    "qemu-system-x86_64:qemu-system-x86"
    "modprobe:kmod" "depmod:kmod" "cpio:cpio" "gzip:gzip" "dpkg-deb:dpkg"
    "rdma:iproute2" "ip:iproute2"
    "ibv_devinfo:ibverbs-utils" "ib_read_bw:perftest"
    "lib:libibverbs.so.1:libibverbs1" "lib:libibverbs/librxe-rdmav*.so:ibverbs-providers"
)
have_lib() { compgen -G "/usr/lib/*-linux-gnu/$1" >/dev/null || compgen -G "/usr/lib/$1" >/dev/null || compgen -G "/lib/*-linux-gnu/$1" >/dev/null; }
missing_packages() {
    local e want pkg
    for e in "${HOST_NEEDS[@]}"; do
        if [ "${e%%:*}" = lib ]; then e=${e#lib:}; want=${e%%:*}; pkg=${e#*:}; have_lib "$want" && continue
        else want=${e%%:*}; pkg=${e#*:}; PATH=$PATH:/usr/sbin:/sbin command -v "$want" >/dev/null 2>&1 && continue; fi
        echo "$pkg"
    done | awk '!seen[$0]++'
}
apt_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
    else return 1; fi
}
deps() {
    local miss
    miss=$(missing_packages | tr '\n' ' ')
    [ -n "${miss// /}" ] || return 0
    command -v apt-get >/dev/null || die "missing host packages ($miss) and no apt-get to install them"
    [ "${LOGMEMCACHED_VM_NO_INSTALL:-0}" != 1 ] || die "missing host packages: $miss (install: apt-get install -y $miss)"
    echo "rdma-vm: installing missing host packages: $miss" >&2
    # shellcheck disable=SC2086
    if ! apt_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $miss >&2; then
        apt_as_root apt-get update >&2 || die "cannot run apt-get as root; install: apt-get install -y $miss"
        # shellcheck disable=SC2086
        apt_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $miss >&2 \
            || die "apt-get install failed for: $miss"
    fi
    miss=$(missing_packages | tr '\n' ' ')
    [ -z "${miss// /}" ] || die "still missing after apt-get install: $miss"
}

# Build the kernel + initramfs once, when missing or made by an older recipe.
# Serialised under a lock so that concurrent runs do not race each other.
ensure_setup() {
    deps
    [ -f "$VMDIR/initramfs.cpio.gz" ] && [ "$(cat "$VMDIR/version" 2>/dev/null)" = "$SETUP_VERSION" ] && return 0
    mkdir -p "$VMDIR"
    (
        flock -w 600 8 || die "timed out waiting for another setup (lock $VMDIR/.setup.lock)"
        if [ -f "$VMDIR/initramfs.cpio.gz" ] && [ "$(cat "$VMDIR/version" 2>/dev/null)" = "$SETUP_VERSION" ]; then exit 0; fi
        echo "rdma-vm: first use: building the VM kernel + initramfs in $VMDIR" >&2
        setup >&2
    ) 8>>"$VMDIR/.setup.lock" || exit $?
    [ -f "$VMDIR/initramfs.cpio.gz" ] || die "setup did not produce $VMDIR/initramfs.cpio.gz"
}

setup() {
    mkdir -p "$VMDIR" && cd "$VMDIR"
    rm -rf kern bb initramfs && mkdir -p kern bb initramfs/{bin,proc,sys,dev,newroot,mods}
    if [ -z "$KPKG" ]; then
        KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
        if [ -z "$KPKG" ]; then   # a fresh machine with empty package lists
            apt_as_root apt-get update >&2 || true
            KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
        fi
        [ -n "$KPKG" ] || die "cannot resolve linux-image-amd64 (Debian apt source needed, or set RDMA_VM_KPKG)"
    fi
    rm -f ./*.deb
    apt-get download "$KPKG" busybox-static >/dev/null 2>&1 || { apt_as_root apt-get update >/dev/null 2>&1 || true; apt-get download "$KPKG" busybox-static; } \
        || die "apt-get download $KPKG busybox-static failed (a Debian apt source is needed)"
    dpkg-deb -x "$KPKG"_*.deb kern
    dpkg-deb -x busybox-static_*.deb bb
    local kv
    kv=$(ls kern/lib/modules)   # Debian 12 layout; Debian 13 uses usr/lib/modules and .ko.xz (not handled)
    depmod -b "$VMDIR/kern" "$kv"
    # load order = dependency order; crc32_generic is a soft (crypto) dependency of rdma_rxe
    local i=0 f
    for m in virtio_pci 9pnet_virtio 9p virtio_net crc32_generic rdma_rxe ib_uverbs rdma_ucm veth dummy; do
        modprobe -d "$VMDIR/kern" -S "$kv" --show-depends "$m"
    done | awk '/^insmod/{print $2}' | awk '!seen[$0]++' | while read -r f; do
        i=$((i+1)); cp "$f" "initramfs/mods/$(printf %02d "$i")_$(basename "$f")"
    done
    ls initramfs/mods | grep -q '\.ko$' || die "modules are compressed; this script expects plain .ko (Debian 12 kernel)"
    cp bb/bin/busybox initramfs/bin/busybox
    cp "kern/boot/vmlinuz-$kv" vmlinuz
    cat > initramfs/init <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in /mods/*.ko; do insmod "$m" || echo "rdma-vm: insmod $m failed"; done
o=trans=virtio,version=9p2000.L,msize=262144
mount -t tmpfs -o mode=755 tmpfs /newroot
cd /newroot && mkdir -p usr etc proc sys dev tmp run root var/tmp ctl && chmod 1777 tmp var/tmp
for l in bin lib lib64 sbin; do ln -s usr/$l $l; done
mount -t 9p -o $o,ro,cache=loose hostusr /newroot/usr
mount -t 9p -o $o,ro hostetc /newroot/etc
mount -t 9p -o $o ctl /newroot/ctl
WD=$(cat /newroot/ctl/cwd)
mkdir -p "/newroot$WD" && mount -t 9p -o $o work "/newroot$WD"
cp /bin/busybox /newroot/busybox
mount --move /dev /newroot/dev; mount --move /proc /newroot/proc; mount --move /sys /newroot/sys
exec switch_root /newroot /bin/sh /ctl/guest.sh
EOF
    chmod +x initramfs/init
    (cd initramfs && find . | cpio -o -H newc --quiet | gzip -1 > ../initramfs.cpio.gz)
    rm -rf kern bb ./*.deb
    echo "$SETUP_VERSION" > version
    echo "rdma-vm: setup done in $VMDIR (kernel $kv, $(ls initramfs/mods | wc -l) modules)"
}

# Environment passed from the host to the guest command: the knobs below and
# every LOGMEMCACHED_* / RUST_BACKTRACE / RUST_TEST_* variable.
write_guest_env() {
    local v
    { printf 'export RDMA_VM_HUGEPAGES=%q\n' "${RDMA_VM_HUGEPAGES:-16}"
      for v in $(compgen -v | grep -E '^(LOGMEMCACHED_|RUST_BACKTRACE$|RUST_TEST_|RUST_LOG$)' || true); do
          printf 'export %s=%q\n' "$v" "${!v}"
      done
    } > "$1/env.sh"
}

pick_accel() {
    case ${RDMA_VM_ACCEL:-auto} in
        kvm|tcg) echo "$RDMA_VM_ACCEL" ;;
        *) if [ -w /dev/kvm ] && grep -qE '\b(vmx|svm)\b' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then echo kvm; else echo tcg; fi ;;
    esac
}

run() {
    [ $# -ge 1 ] || die "usage: rdma-vm.sh run CMD [ARGS...]"
    ensure_setup
    local cwd accel cpu rc
    cwd=$(pwd -P)
    case $cwd in /|/usr|/usr/*|/etc|/etc/*) die "run from a project directory, not $cwd";; esac
    ctl=$(mktemp -d /tmp/rdma-vm.XXXXXX)   # global: used by the EXIT trap
    trap 'rm -rf "$ctl"' EXIT
    echo "$cwd" > "$ctl/cwd"
    { printf 'cd %q || exit 126\nexec' "$cwd"; printf ' %q' "$@"; printf '\n'; } > "$ctl/cmd.sh"
    printf '%s\n' "${RDMA_VM_SETUP:-}" > "$ctl/setup.sh"
    write_guest_env "$ctl"
    cat > "$ctl/guest.sh" <<'EOF'
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
stty -onlcr 2>/dev/null
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 \
  && rdma link add rxe0 type rxe netdev eth0 || { echo "rdma-vm: rxe setup failed"; echo 125 > /ctl/exit-code; /busybox poweroff -f; }
. /ctl/env.sh
echo "$RDMA_VM_HUGEPAGES" > /proc/sys/vm/nr_hugepages 2>/dev/null || true
export LOGMEMCACHED_IN_VM=1
. /ctl/setup.sh
sh /ctl/cmd.sh; echo $? > /ctl/exit-code
sync; /busybox poweroff -f
EOF
    accel=$(pick_accel); cpu=max; [ "$accel" = kvm ] && cpu=host
    set +e
    timeout "${RDMA_VM_TIMEOUT:-1800}" qemu-system-x86_64 -accel "$accel" -cpu "$cpu" \
        -m "${RDMA_VM_MEM:-1024}" -smp "${RDMA_VM_SMP:-2}" \
        -display none -monitor none -serial stdio -no-reboot \
        -kernel "$VMDIR/vmlinuz" -initrd "$VMDIR/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1" \
        -fsdev local,id=f0,path=/usr,security_model=none,readonly=on -device virtio-9p-pci,fsdev=f0,mount_tag=hostusr \
        -fsdev local,id=f1,path=/etc,security_model=none,readonly=on -device virtio-9p-pci,fsdev=f1,mount_tag=hostetc \
        -fsdev local,id=f2,path="$ctl",security_model=none -device virtio-9p-pci,fsdev=f2,mount_tag=ctl \
        -fsdev local,id=f3,path="$cwd",security_model=none -device virtio-9p-pci,fsdev=f3,mount_tag=work \
        -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0 </dev/null
    rc=$?
    set -e
    [ $rc -eq 0 ] || die "qemu exited with $rc (124 = timeout)"
    [ -f "$ctl/exit-code" ] || die "guest did not report an exit code"
    return "$(cat "$ctl/exit-code")"
}


# ---------------------------------------------------------------- pair mode
# True if pid $1 is alive (not a zombie) and a child of this script.
ours() {
    local st
    { read -r st < "/proc/$1/stat"; } 2>/dev/null || return 1
    st=${st##*) }                   # drop "pid (comm) "
    set -- $st                      # state ppid ...
    [ "$1" != Z ] && [ "$2" = "$$" ]
}

udp_port_used() { grep -q "$(printf ':%04X ' "$1")" /proc/net/udp /proc/net/udp6 2>/dev/null; }

now_ms() { local t=${EPOCHREALTIME//[!0-9]/}; echo $((10#$t / 1000)); }
secs() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }   # ms -> "12.3"

# SIGKILL (a power cut) a VM this script started; disown it so bash does not
# print a "Killed" job notice (its status is not needed any more).
kill_vm() { kill -KILL "${qpid[$1]}" 2>/dev/null || true; disown "${qpid[$1]}" 2>/dev/null || true; }

pair_cleanup() {
    local s i
    for s in A B; do
        if [ -n "${qpid[$s]:-}" ] && ours "${qpid[$s]}"; then kill_vm "$s"; fi
    done
    for i in $(seq 100); do         # a SIGKILLed qemu takes a moment to go: outlive it
        [ -e "/proc/${qpid[A]:-0}" ] || [ -e "/proc/${qpid[B]:-0}" ] || break
        sleep 0.1
    done
    rm -rf "${pairtmp:-}"
}

pair() {
    local -a cmd_a=() cmd_b=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do cmd_a+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    cmd_b=("$@")
    [ ${#cmd_a[@]} -ge 1 ] && [ ${#cmd_b[@]} -ge 1 ] || die "usage: rdma-vm.sh pair CMD_A [ARGS...] -- CMD_B [ARGS...]"
    ensure_setup
    local cwd accel cpu smp s t pa pb i
    cwd=$(pwd -P)
    case $cwd in /|/usr|/usr/*|/etc|/etc/*) die "run from a project directory, not $cwd";; esac
    declare -gA qpid=() ctl=() log=() ip=() peer=() mac=() lport=() rport=()
    local -A res=() tend=()
    pairtmp=$(mktemp -d /tmp/rdma-vm-pair.XXXXXX)   # global: used by the EXIT trap
    trap pair_cleanup EXIT
    trap 'exit 130' INT; trap 'exit 143' TERM
    ip[A]=192.168.77.1; ip[B]=192.168.77.2; peer[A]=B; peer[B]=A
    mac[A]=52:54:00:77:00:01; mac[B]=52:54:00:77:00:02
    for s in A B; do
        ctl[$s]=$pairtmp/$s; log[$s]=$cwd/.rdma-vm-$s.log
        mkdir "${ctl[$s]}"; echo "$cwd" > "${ctl[$s]}/cwd"
        printf '%s\n' "${RDMA_VM_SETUP:-}" > "${ctl[$s]}/setup.sh"
        write_guest_env "${ctl[$s]}"
        { printf 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root'
          printf ' RDMA_VM_SIDE=%s RDMA_VM_PEER=%s RDMA_VM_IP=%s RDMA_VM_PEER_IP=%s\n' "$s" "${peer[$s]}" "${ip[$s]}" "${ip[${peer[$s]}]}"
          cat <<'EOF'
stty -onlcr 2>/dev/null
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
ip link set lo up && ip link set eth0 up && ip addr add "$RDMA_VM_IP/24" dev eth0 \
  && rdma link add rxe0 type rxe netdev eth0 || { echo "rdma-vm: rxe setup failed"; echo 125 > /ctl/exit-code; /busybox poweroff -f; }
. /ctl/env.sh
echo "$RDMA_VM_HUGEPAGES" > /proc/sys/vm/nr_hugepages 2>/dev/null || true
export LOGMEMCACHED_IN_VM=1
. /ctl/setup.sh
sh /ctl/cmd.sh; echo $? > /ctl/exit-code
sync; /busybox poweroff -f
EOF
        } > "${ctl[$s]}/guest.sh"
        cat > "${ctl[$s]}/kill-vm" <<'EOF'
#!/bin/sh
# kill-vm [A|B|peer]: ask the host to SIGKILL that VM's qemu (a power cut); default peer
t=${1:-peer}; [ "$t" = peer ] && t=$RDMA_VM_PEER
rm -f /ctl/kill-done
echo "$t" > /ctl/.kill-request.tmp && mv /ctl/.kill-request.tmp /ctl/kill-request || exit 1
i=0; while [ ! -s /ctl/kill-done ]; do i=$((i+1)); [ $i -le 300 ] || { echo "kill-vm: no answer from host" >&2; exit 1; }; sleep 0.1; done
cat /ctl/kill-done
EOF
        chmod +x "${ctl[$s]}/kill-vm"
    done
    { printf 'cd %q || exit 126\nexec' "$cwd"; printf ' %q' "${cmd_a[@]}"; printf '\n'; } > "${ctl[A]}/cmd.sh"
    { printf 'cd %q || exit 126\nexec' "$cwd"; printf ' %q' "${cmd_b[@]}"; printf '\n'; } > "${ctl[B]}/cmd.sh"
    accel=$(pick_accel); cpu=max; [ "$accel" = kvm ] && cpu=host
    smp=${RDMA_VM_SMP:-1}     # two 2-vCPU TCG VMs on a 2-core host measured ~40% slower

    # Ports: under a lock, pick a pair that no UDP socket uses, start both qemus,
    # and hold the lock until both have bound theirs.
    if { exec 9>>/tmp/rdma-vm-pair.lock; } 2>/dev/null; then flock -w 60 9 || true; else exec 9>/dev/null; fi
    if [ -n "${RDMA_VM_PAIR_PORT:-}" ]; then
        pa=$RDMA_VM_PAIR_PORT; pb=$((pa + 1))
        ! udp_port_used $pa && ! udp_port_used $pb || die "RDMA_VM_PAIR_PORT: UDP port $pa or $pb is in use"
    else
        pa=
        for i in $(seq 1 500); do
            t=$((20000 + RANDOM % 5000 * 2))
            udp_port_used $t || udp_port_used $((t + 1)) || { pa=$t; break; }
        done
        [ -n "$pa" ] || die "no free UDP port pair in 20000-29999"
        pb=$((pa + 1))
    fi
    lport[A]=$pa; rport[A]=$pb; lport[B]=$pb; rport[B]=$pa
    local t0 deadline grace_end=
    t0=$(now_ms); deadline=$((t0 + ${RDMA_VM_TIMEOUT:-1800} * 1000))
    for s in A B; do
        qemu-system-x86_64 -accel "$accel" -cpu "$cpu" \
            -m "${RDMA_VM_MEM:-1024}" -smp "$smp" \
            -display none -monitor none -serial stdio -no-reboot \
            -kernel "$VMDIR/vmlinuz" -initrd "$VMDIR/initramfs.cpio.gz" \
            -append "console=ttyS0 quiet loglevel=3 panic=-1" \
            -fsdev local,id=f0,path=/usr,security_model=none,readonly=on -device virtio-9p-pci,fsdev=f0,mount_tag=hostusr \
            -fsdev local,id=f1,path=/etc,security_model=none,readonly=on -device virtio-9p-pci,fsdev=f1,mount_tag=hostetc \
            -fsdev local,id=f2,path="${ctl[$s]}",security_model=none -device virtio-9p-pci,fsdev=f2,mount_tag=ctl \
            -fsdev local,id=f3,path="$cwd",security_model=none -device virtio-9p-pci,fsdev=f3,mount_tag=work \
            -netdev socket,id=n0,udp=127.0.0.1:${rport[$s]},localaddr=127.0.0.1:${lport[$s]} \
            -device virtio-net-pci,netdev=n0,mac=${mac[$s]} \
            </dev/null >"${log[$s]}" 2>&1 9>&- &
        qpid[$s]=$!
    done
    for i in $(seq 1 100); do
        { udp_port_used $pa && udp_port_used $pb; } && break
        ours "${qpid[A]}" && ours "${qpid[B]}" || break
        sleep 0.1
    done
    flock -u 9 2>/dev/null || true
    exec 9>&-

    local alive qrc req tgt msg n
    local -A why=() note=()
    while :; do
        alive=0
        for s in A B; do                      # collect VMs that are off
            [ -z "${res[$s]:-}" ] || continue
            if ours "${qpid[$s]}"; then alive=1; continue; fi
            qrc=0; [ -n "${why[$s]:-}" ] || wait "${qpid[$s]}" || qrc=$?
            tend[$s]=$(now_ms)
            case ${why[$s]:-} in
                request|grace|timeout) res[$s]=${why[$s]} ;;
                *) if [ $qrc -eq 0 ] && [ -s "${ctl[$s]}/exit-code" ]; then res[$s]=$(cat "${ctl[$s]}/exit-code")
                   else res[$s]=vmfail; note[$s]="qemu exited with $qrc and no exit code from the guest"; fi ;;
            esac
            case ${res[$s]} in
                0|request|grace|timeout) ;;
                *) [ -n "$grace_end" ] || grace_end=$(( $(now_ms) + ${RDMA_VM_PAIR_GRACE:-10} * 1000 )) ;;
            esac
        done
        [ $alive = 1 ] || break
        for s in A B; do                      # power-cut requests from the guests
            req=${ctl[$s]}/kill-request
            [ -s "$req" ] || continue
            tgt=$(tr -d ' \r\n' < "$req"); rm -f "$req"
            tgt=${tgt#kill-}; [ "$tgt" = peer ] && tgt=${peer[$s]}
            case $tgt in
                A|B) if [ -z "${res[$tgt]:-}" ] && [ -z "${why[$tgt]:-}" ] && ours "${qpid[$tgt]}"; then
                         kill_vm "$tgt"
                         why[$tgt]=request; note[$tgt]="on request from $s at $(secs $(( $(now_ms) - t0 ))) s"
                         msg="killed $tgt"
                     else msg="not running: $tgt"; fi ;;
                *) msg="bad request '$tgt' (want A, B or peer)" ;;
            esac
            echo "$msg" > "${ctl[$s]}/kill-done.tmp" && mv "${ctl[$s]}/kill-done.tmp" "${ctl[$s]}/kill-done"
        done
        n=$(now_ms)
        for s in A B; do                      # grace after a failure, overall timeout
            [ -z "${res[$s]:-}" ] && [ -z "${why[$s]:-}" ] && ours "${qpid[$s]}" || continue
            if [ "$n" -ge "$deadline" ]; then
                kill_vm "$s"
                why[$s]=timeout; note[$s]="by the host after RDMA_VM_TIMEOUT=${RDMA_VM_TIMEOUT:-1800} s"
            elif [ -n "$grace_end" ] && [ "$n" -ge "$grace_end" ]; then
                kill_vm "$s"
                why[$s]=grace; note[$s]="by the host ${RDMA_VM_PAIR_GRACE:-10} s after the other side failed"
            fi
        done
        sleep 0.1
    done

    for s in A B; do
        [ -f "${log[$s]}" ] || continue
        sed -e 's/\r$//' -e "s/^/$s|/" "${log[$s]}"
        [ -z "$(tail -c1 "${log[$s]}")" ] || echo
    done
    local rc=0 vmfail=0 done_ok=0
    for s in A B; do
        t=$(secs $(( ${tend[$s]} - t0 )))
        case ${res[$s]} in
            request) echo "rdma-vm pair: $s: VM killed ${note[$s]} (power cut)" >&2 ;;
            grace)   echo "rdma-vm pair: $s: VM killed ${note[$s]} (at $t s)" >&2 ;;
            timeout) echo "rdma-vm pair: $s: VM killed ${note[$s]}" >&2; vmfail=1 ;;
            vmfail)  echo "rdma-vm pair: $s: VM failure: ${note[$s]} (at $t s; see ${log[$s]})" >&2; vmfail=1 ;;
            *) echo "rdma-vm pair: $s: exit ${res[$s]} (VM off at $t s)" >&2
               if [ "${res[$s]}" = 0 ]; then done_ok=1; elif [ $rc -eq 0 ]; then rc=${res[$s]}; fi ;;
        esac
    done
    echo "rdma-vm pair: UDP link 127.0.0.1:$pa <-> 127.0.0.1:$pb, -smp $smp, accel $accel, logs ${log[A]} ${log[B]}" >&2
    if [ $vmfail = 1 ]; then rc=125
    elif [ $rc -eq 0 ] && [ $done_ok = 0 ]; then
        echo "rdma-vm pair: no side's command ran to completion" >&2; rc=125
    fi
    [ $rc -eq 0 ] || echo "rdma-vm pair: exit status $rc" >&2
    return $rc
}

case ${1:-} in
    setup) deps; setup ;;
    deps) deps ;;
    run) shift; run "$@" ;;
    pair) shift; pair "$@" ;;
    *) echo "usage: $0 setup | deps | run CMD [ARGS...] | pair CMD_A [ARGS...] -- CMD_B [ARGS...]" >&2; exit 2 ;;
esac
