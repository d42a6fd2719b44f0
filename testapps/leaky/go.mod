module memprof.test/leaky

go 1.19
