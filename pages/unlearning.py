import streamlit as st
st.title('Unlearning')
st.info('Coming next.')
