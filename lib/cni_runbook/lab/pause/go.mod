module cnirunbook.local/labpause

go 1.22
