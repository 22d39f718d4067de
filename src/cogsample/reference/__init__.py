"""What reproduces others: the SAT yaml translation, the sat and diffusers profiles, the golden
replay of the reference's recordings and the math-mode probe that chooses one."""
