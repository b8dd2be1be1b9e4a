// libyaml (Debian: libyaml-0-2): the YAML 1.1 parser the policy and state-file loaders read
// events from (Sources/SegguardPolicy/YAML.swift builds the tree).
#pragma once
#include <yaml.h>
