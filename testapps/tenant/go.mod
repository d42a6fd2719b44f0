module memprof.test/tenant

go 1.19
