module memprof.test/service

go 1.19
