#define _GNU_SOURCE
#include "segguard_shims.h"
#include <errno.h>
#include <sys/socket.h>

int sg_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return -errno;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

int sg_peer_groups(int fd, gid_t *groups, int *count) {
    socklen_t len = (socklen_t)(*count * (int)sizeof(gid_t));
    int rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
    *count = (int)(len / sizeof(gid_t));
    if (rc < 0) return -errno;
    return 0;
}

#include <sched.h>
#include <sys/eventfd.h>

int sg_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }

int sg_enter_netns(int fd) {
    if (setns(fd, CLONE_NEWNET) < 0) return -errno;
    return 0;
}

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

int sg_pidfd_open(pid_t pid) {
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : (int)fd;
}

int sg_pidfd_send_signal(int pidfd, int sig) {
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

#include <stdio.h>
#include <string.h>
#include <systemd/sd-bus.h>

int sg_notify_desktop(const char *app, const char *summary, const char *body, char *err, size_t errlen) {
    sd_bus *bus = NULL;
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message *reply = NULL;
    int r = sd_bus_open_user(&bus);
    if (r < 0) {
        snprintf(err, errlen, "session bus: %s", strerror(-r));
        return r;
    }
    /* Notify(app_name s, replaces_id u, app_icon s, summary s, body s, actions as, hints a{sv}, expire_timeout i) */
    r = sd_bus_call_method(bus, "org.freedesktop.Notifications", "/org/freedesktop/Notifications",
                           "org.freedesktop.Notifications", "Notify", &error, &reply, "susssasa{sv}i",
                           app, 0, "dialog-warning", summary, body, 0, 1, "urgency", "y", 2, -1);
    if (r < 0) snprintf(err, errlen, "Notify: %s", error.message ? error.message : strerror(-r));
    sd_bus_error_free(&error);
    sd_bus_message_unref(reply);
    sd_bus_flush_close_unref(bus);
    return r < 0 ? r : 0;
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

int sg_peer_pidfd(int fd) {
    int pidfd = -1;
    socklen_t len = sizeof(pidfd);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0) return -errno;
    return pidfd;
}

#include <sys/fanotify.h>
#include <fcntl.h>

int sg_fanotify_init(void) {
    return fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
}

int sg_fanotify_mark_filesystem(int fd, const char *path, int add) {
    return fanotify_mark(fd, (add ? FAN_MARK_ADD : FAN_MARK_REMOVE) | FAN_MARK_FILESYSTEM, FAN_OPEN_EXEC_PERM, AT_FDCWD, path);
}

int sg_fanotify_parse(const void *buf, size_t len, sg_fanotify_event *events, int max) {
    const struct fanotify_event_metadata *m = buf;
    int n = 0;
    while (n < max && FAN_EVENT_OK(m, len)) {
        if (m->vers != FANOTIFY_METADATA_VERSION) return -1;
        events[n].fd = m->fd;
        events[n].pid = m->pid;
        events[n].mask = m->mask;
        n++;
        m = FAN_EVENT_NEXT(m, len);
    }
    return n;
}

int sg_fanotify_respond(int fanotify_fd, int event_fd, int allow) {
    struct fanotify_response r = { .fd = event_fd, .response = allow ? FAN_ALLOW : FAN_DENY };
    return write(fanotify_fd, &r, sizeof r) == (ssize_t)sizeof r ? 0 : -1;
}

int sg_fanotify_is_exec_perm(unsigned long long mask) {
    return (mask & FAN_OPEN_EXEC_PERM) != 0;
}

#include <linux/netlink.h>
#include <linux/connector.h>
#include <linux/filter.h>
#include <arpa/inet.h>
#include <linux/cn_proc.h>
#include <sys/socket.h>
#include <string.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/utsname.h>

int sg_proc_connector_open(void) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_CONNECTOR);
    if (fd < 0) return -1;
    // A large receive buffer (root may exceed rmem_max): an exec flood overflows it later.
    int rcvbuf = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_nl addr = { .nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC, .nl_pid = 0 };
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { close(fd); return -1; }
    // nlmsghdr, cn_msg (flexible array member), then the operation. Linux 6.6 and later take
    // a struct proc_input {op, event_type} and then send only the events asked for: exec only,
    // so fork and exit (two more wake-ups per command run) never reach this socket. Older
    // kernels ignore a message of that length, so they get the bare operation.
    struct { uint32_t op; uint32_t event_type; } input = { PROC_CN_MCAST_LISTEN, PROC_EVENT_EXEC };
    size_t payload = sg_kernel_at_least(6, 6) ? sizeof input : sizeof(enum proc_cn_mcast_op);
    unsigned char msg[NLMSG_LENGTH(sizeof(struct cn_msg) + sizeof input)];
    memset(msg, 0, sizeof msg);
    struct nlmsghdr *nl = (struct nlmsghdr *)msg;
    nl->nlmsg_len = NLMSG_LENGTH(sizeof(struct cn_msg) + payload);
    nl->nlmsg_type = NLMSG_DONE;
    struct cn_msg *cn = NLMSG_DATA(nl);
    cn->id.idx = CN_IDX_PROC;
    cn->id.val = CN_VAL_PROC;
    cn->len = (uint16_t)payload;
    memcpy(cn->data, &input, payload);
    if (send(fd, msg, nl->nlmsg_len, 0) != (ssize_t)nl->nlmsg_len) { close(fd); return -1; }
    // A socket filter keeps exec events only, in the kernel: before Linux 6.6 (Debian 12's
    // 6.1) the connector sends fork, exit, uid, comm... events for every process too, and each
    // would wake this socket's reader. The word at nlmsghdr + cn_msg is proc_event.what, in
    // host order (cBPF loads big-endian: compare with htonl).
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NLMSG_LENGTH(sizeof(struct cn_msg))),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl(PROC_EVENT_EXEC), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_fprog prog = { .len = sizeof code / sizeof code[0], .filter = code };
    (void)setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);  // without it: every event reaches the parser, which skips the others
    return fd;
}

int sg_kernel_at_least(int major, int minor) {
    struct utsname u;
    if (uname(&u) != 0) return 0;
    int ma = 0, mi = 0;
    if (sscanf(u.release, "%d.%d", &ma, &mi) != 2) return 0;
    return ma > major || (ma == major && mi >= minor);
}

int sg_proc_connector_parse(const void *buf, size_t len, sg_proc_exec *out, int max) {
    int n = 0;
    const struct nlmsghdr *nl = buf;
    for (; NLMSG_OK(nl, len); nl = NLMSG_NEXT(nl, len)) {
        if (nl->nlmsg_type == NLMSG_NOOP) continue;
        if (nl->nlmsg_type == NLMSG_ERROR || nl->nlmsg_type == NLMSG_OVERRUN) return -1;
        if (nl->nlmsg_len < NLMSG_LENGTH(sizeof(struct cn_msg))) return -1;
        const struct cn_msg *cn = NLMSG_DATA(nl);
        if (cn->id.idx != CN_IDX_PROC || cn->id.val != CN_VAL_PROC) continue;
        if (nl->nlmsg_len < NLMSG_LENGTH(sizeof(struct cn_msg)) + cn->len || cn->len < sizeof(struct proc_event)) continue;
        const struct proc_event *ev = (const struct proc_event *)cn->data;
        if (ev->what != PROC_EVENT_EXEC || n >= max) continue;
        out[n].pid = ev->event_data.exec.process_pid;
        out[n].tgid = ev->event_data.exec.process_tgid;
        n++;
    }
    return n;
}

#include <sys/prctl.h>

int sg_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0) == 0 ? 0 : -errno;
}

int sg_thread_name(char *buf, size_t len) {
    if (len < 16) return -ERANGE;
    return prctl(PR_GET_NAME, (unsigned long)buf, 0, 0, 0) == 0 ? 0 : -errno;
}

int sg_gettid(void) {
    return (int)syscall(SYS_gettid);
}

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>

int sg_eapol_socket(const char *ifname) {
    unsigned int index = if_nametoindex(ifname);
    if (index == 0) return -errno;
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
    if (fd < 0) return -errno;
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x888e, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 64),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_fprog prog = { .len = sizeof(code) / sizeof(code[0]), .filter = code };
    struct sockaddr_ll addr = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = (int)index };
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}
