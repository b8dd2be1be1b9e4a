// libnftables (the library behind the nft tool), driven with its JSON API.
#pragma once
#include <nftables/libnftables.h>
