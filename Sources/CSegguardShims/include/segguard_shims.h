// Thin C helpers for what Swift cannot call directly. No decisions live here.
#pragma once
#include <sys/types.h>
#include <stdint.h>

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
