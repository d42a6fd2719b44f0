module memprof.test/load

go 1.19
