module memprof.test/stacks

go 1.19
