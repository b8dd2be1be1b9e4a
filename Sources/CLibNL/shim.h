// Headers of libnl-3 (core, generic netlink, route) and the kernel's netlink UAPI that
// segment-guard uses. Include paths come from pkg-config (libnl-genl-3.0).
#pragma once
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <netlink/msg.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/genl/genl.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/family.h>
#include <netlink/route/rtnl.h>
#include <netlink/route/link.h>
#include <linux/if.h>
#include <linux/if_arp.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <linux/nl80211.h>
