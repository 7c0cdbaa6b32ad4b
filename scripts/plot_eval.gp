# gnuplot -e "dir='D'; outfile='eval.png'; tasks='niah_number vt'; modes='vanilla longmamba'; \
#             title='...'" scripts/plot_eval.gp
# One panel per task: accuracy against prompt length (log 2 axis), a line
# per mode with 95% Wilson error bars, from the D/TASK__MODE.dat files that
# scripts/plot_eval.sh writes (length accuracy wilson_lo wilson_hi correct n).
if (!exists("title")) title = 'longmamba eval'
n = words(tasks)
nm = words(modes)
cols = n < 4 ? n : 4
rows = (n + cols - 1) / cols

set terminal pngcairo noenhanced size 430*cols, 380*rows + 40 font ",10"  # task_names verbatim
set output outfile
set multiplot layout rows, cols title title
set logscale x 2
set yrange [-0.05:1.05]
set autoscale xfix  # the lengths run, plus the offsets
set offsets graph 0.08, graph 0.08, 0, 0
set bmargin 6
set grid
set key below horizontal font ",8"
set xlabel "prompt length (tokens)"
set ylabel "accuracy"
array pts[8] = [7, 5, 9, 11, 13, 15, 4, 6]

do for [i = 1:n] {
    t = word(tasks, i)
    set title t
    # modes side by side (a 3% shift each) so that the bars stay apart
    plot for [m = 1:nm] dir.'/'.t.'__'.word(modes, m).'.dat' \
         using ($1 * (1 + 0.03 * (m - 1))):2:3:4 with yerrorlines lw 2 pt pts[(m - 1) % 8 + 1] \
         title word(modes, m)
}
unset multiplot
