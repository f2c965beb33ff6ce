"""Software My Number card, readers, peripherals and J-LIS-side services, so the whole
stack runs without hardware. May import ``cardio``; nothing outside tests and the
``emu`` wiring imports this package."""
