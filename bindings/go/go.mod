module longmamba

go 1.19
