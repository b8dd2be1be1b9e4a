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
