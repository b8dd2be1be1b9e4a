// Thin C helpers for what Swift cannot call directly. No decisions live here.
#pragma once
#include <sys/types.h>
#include <stdint.h>
#include <sys/xattr.h>

/// SO_PEERCRED of a connected Unix socket. Returns 0 or -errno.
int sg_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

/// SO_PEERGROUPS (supplementary groups of the peer). Fills up to *count gids, sets *count
/// to the number the peer has. Returns 0 or -errno (-ERANGE when the buffer is too small).
int sg_peer_groups(int fd, gid_t *groups, int *count);

/// eventfd(0, EFD_CLOEXEC): Glibc's Swift overlay does not export <sys/eventfd.h>.
int sg_eventfd(void);

/// setns(fd, CLONE_NEWNET) for the calling thread: <sched.h> needs _GNU_SOURCE.
/// Returns 0 or -errno.
int sg_enter_netns(int fd);

/// pidfd_open(2) (no glibc wrapper in Debian 12). Returns a pidfd or -errno.
int sg_pidfd_open(pid_t pid);

/// pidfd_send_signal(2). Returns 0 or -errno.
int sg_pidfd_send_signal(int pidfd, int sig);

#include <stddef.h>

/// Sends org.freedesktop.Notifications.Notify on the user's session bus (sd-bus; the call is
/// variadic, so it lives here). Returns 0, or -errno with a message in `err`.
int sg_notify_desktop(const char *app, const char *summary, const char *body, char *err, size_t errlen);

/// SO_PEERPIDFD (Linux 6.5+): a pidfd of the process that connected. Returns it or -errno
/// (-ENOPROTOOPT on older kernels).
int sg_peer_pidfd(int fd);

// fanotify exec permission events (screen-capture blocking). Thin wrappers: the constants and
// struct layouts of <sys/fanotify.h> are not visible to Swift.

/// fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE | O_CLOEXEC); -1 and errno on failure.
int sg_fanotify_init(void);
/// Adds (add != 0) or removes FAN_OPEN_EXEC_PERM on the filesystem holding `path` (FAN_MARK_FILESYSTEM:
/// every mount of it, in every mount namespace, so a service with its own namespace still sees
/// the users' execs).
int sg_fanotify_mark_filesystem(int fd, const char *path, int add);

/// One permission event taken from a read buffer.
typedef struct {
    int fd;          // the file being executed (open, O_RDONLY), or -1 (FAN_NOFD)
    int pid;         // the process calling execve
    unsigned long long mask;
} sg_fanotify_event;

/// Splits `len` bytes read from the fanotify fd into at most `max` events; returns how many,
/// or -1 when the buffer holds a malformed or version-mismatched record.
int sg_fanotify_parse(const void *buf, size_t len, sg_fanotify_event *events, int max);
/// Answers one permission event: allow != 0 → FAN_ALLOW, else FAN_DENY.
int sg_fanotify_respond(int fanotify_fd, int event_fd, int allow);
/// True when `mask` carries FAN_OPEN_EXEC_PERM.
int sg_fanotify_is_exec_perm(unsigned long long mask);

// The process events connector (NETLINK_CONNECTOR, CN_IDX_PROC): every exec on the system.

/// Whether the running kernel is at least major.minor (uname).
int sg_kernel_at_least(int major, int minor);

/// Opens a connector socket, joins CN_IDX_PROC and sends PROC_CN_MCAST_LISTEN (exec events
/// only on Linux >= 6.6); -1 and errno.
int sg_proc_connector_open(void);

/// One exec from the connector.
typedef struct {
    int pid;   // the thread that called execve
    int tgid;  // its process
} sg_proc_exec;

/// Extracts the exec events of `len` bytes read from the socket into at most `max` entries;
/// returns how many (other events are skipped), or -1 for a malformed message.
int sg_proc_connector_parse(const void *buf, size_t len, sg_proc_exec *out, int max);

/// Names the calling thread (prctl PR_SET_NAME: at most 15 bytes kept). prctl is variadic, so
/// Swift cannot call it. Returns 0 or -errno.
int sg_set_thread_name(const char *name);
/// The calling thread's name into `buf` (at least 16 bytes). Returns 0 or -errno.
int sg_thread_name(char *buf, size_t len);
/* The calling thread's id (gettid(2)). */
int sg_gettid(void);

/// A packet socket on interface `ifname` (in the calling thread's network namespace) that
/// receives every EAPOL frame (ethertype 0x888e) sent or received there: ETH_P_ALL, because
/// the kernel hands outgoing frames only to ETH_P_ALL taps, with a classic BPF filter keeping
/// EAPOL. Non-blocking, close-on-exec. Returns the descriptor or -errno.
int sg_eapol_socket(const char *ifname);

/// The loadable segments that are not writable (code, constants, symbol tables) of the running
/// executable and, when libraries is non-zero, of every shared library loaded from a file (the
/// vDSO is not one), as [start, end) addresses rounded inward to whole pages, from their ELF
/// program headers (dl_iterate_phdr). An object with text relocations (DT_TEXTREL: the loader
/// wrote to its code) is left out. Returns how many were written (at most max).
int sg_readonly_segments(uintptr_t *starts, uintptr_t *ends, int max, int libraries);
