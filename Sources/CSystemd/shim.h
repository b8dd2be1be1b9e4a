// libsystemd: sd-bus (desktop notifications, later wpa_supplicant's D-Bus API), sd-daemon.
#pragma once
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
