//! wisp-power: switching servers on and off over IPMI and waking them with magic packets.
