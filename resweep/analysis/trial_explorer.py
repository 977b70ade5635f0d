"""The dashboard's trial explorer: every trial of the study, filtered and sorted in the page.

The rows travel as compact JSON (one array per column, through
:func:`~resweep.analysis.plotly_spec.script_json`, so no user string can close the script) and a
small inline script (no external code) draws at most :data:`SHOWN_ROWS` matching rows; every
cell is set with ``textContent``, never parsed as HTML. A page of 10,000 trials stays small:
the table is drawn from the filter, not written out row by row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resweep.analysis.plotly_spec import script_json
from resweep.analysis.tables import html_escape

SHOWN_ROWS = 200
ERROR_CHARS = 200

SCRIPT = """(function(){
var D=%(data)s,root=document.getElementById(%(id)s);
var q=root.querySelector('input'),st=root.querySelector('select'),info=root.querySelector('.tx-info');
var head=root.querySelector('thead tr'),body=root.querySelector('tbody');
var n=D.rows,cols=D.columns,sortCol=D.sort,sortDir=D.dir;
var text=cols.map(function(c){return D.values[c].map(function(v){return v===null?'':String(v);});});
cols.forEach(function(c,j){var th=document.createElement('th');th.textContent=c;th.style.cursor='pointer';
th.addEventListener('click',function(){if(sortCol===j){sortDir=-sortDir;}else{sortCol=j;sortDir=-1;}draw();});
head.appendChild(th);});
function draw(){var needle=q.value.toLowerCase(),s=st.value,si=cols.indexOf('status'),keep=[];
for(var i=0;i<n;i++){if(s&&text[si][i]!==s)continue;
if(needle){var hit=false;for(var j=0;j<cols.length&&!hit;j++){hit=text[j][i].toLowerCase().indexOf(needle)>=0;}
if(!hit)continue;}keep.push(i);}
if(sortCol>=0){var v=D.values[cols[sortCol]];keep.sort(function(a,b){var x=v[a],y=v[b];
if(x===null)return 1;if(y===null)return -1;return (x<y?-1:x>y?1:0)*sortDir;});}
body.textContent='';keep.slice(0,%(shown)d).forEach(function(i){var tr=document.createElement('tr');
cols.forEach(function(c,j){var td=document.createElement('td');td.textContent=text[j][i];
if(typeof D.values[c][i]==='number')td.className='num';tr.appendChild(td);});body.appendChild(tr);});
info.textContent=keep.length+' of '+n+' trials match'+(keep.length>%(shown)d?' (first %(shown)d shown)':'');}
q.addEventListener('input',draw);st.addEventListener('change',draw);draw();})();"""


def trial_explorer(trials: pd.DataFrame, element_id: str = "trial-explorer", sort_by: str | None = None,
                   descending: bool = True) -> str:
    """HTML of the explorer over ``trials`` (the report's trials table)."""
    frame = trials.copy()
    if "error" in frame.columns:
        frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
        frame["error"] = [None if e is None else str(e)[:ERROR_CHARS] for e in frame["error"]]
    values = {}
    for col in frame.columns:
        series = frame[col]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            arr = series.to_numpy(dtype=float)
            values[str(col)] = np.where(np.isfinite(arr), np.round(arr, 6), np.nan)
        else:
            values[str(col)] = [None if _missing(v) else str(v) for v in series.tolist()]
    columns = [str(c) for c in frame.columns]
    statuses = sorted({str(s) for s in frame["status"]}) if "status" in frame.columns else []
    data = {"rows": len(frame), "columns": columns, "values": values,
            "sort": columns.index(sort_by) if sort_by in columns else -1, "dir": -1 if descending else 1}
    options = '<option value="">all statuses</option>' + "".join(
        f'<option value="{html_escape(s)}">{html_escape(s)}</option>' for s in statuses)
    script = SCRIPT % {"data": script_json(data), "id": script_json(element_id), "shown": SHOWN_ROWS}
    return (
        f'<div id="{html_escape(element_id)}" class="explorer"><p>'
        '<input type="search" placeholder="filter: trial id, knob value, status, error text..." size="48"> '
        f'<select>{options}</select> <span class="tx-info note"></span></p>'
        '<div class="scroll"><table><thead><tr></tr></thead><tbody></tbody></table></div>'
        f'<p class="note">Click a column to sort. Every trial: tables/trials.csv and tables/trials.html.</p>'
        f"</div><script>{script}</script>"
    )


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and v != v) or v is pd.NA
